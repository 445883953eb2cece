"""Hard prompts: P discrete tokens found by search."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.methods.base import Method, RunData, slot_init
from prefixlab.methods.registry import register
from prefixlab.model import Context
from prefixlab.prompt_search import search_prompt

SEARCH_BATCH = 256  # training examples that score each hard-prompt candidate


@register
@dataclasses.dataclass(frozen=True)
class HardPrompt(Method):
    """P hard tokens prepended (their token embeddings fill the slots). Found by search, not gradients:
    see `prefixlab.prompt_search`. `trainable` holds the token ids."""

    name: ClassVar[str] = "prompt"
    summary: ClassVar[str] = 'P hard tokens; exhaustive search if V^P <= 10,000, else greedy coordinate search'
    training: ClassVar[str] = "search"
    uses_context: ClassVar[bool] = True
    keeps_base_at_init: ClassVar[bool] = False

    def init(self, key, cfg, base_params, P):
        return {"ids_P": slot_init(key, P, lambda k: jax.random.randint(k, (), 0, cfg.vocab_size))}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, embeds_PD=base_params["tok_emb"][...][trainable["ids_P"]])

    def n_params(self, cfg, p):
        return p  # discrete tokens, not continuous parameters

    def search(self, loss, base_E, runs, keys_ER, cfg):
        """One (seed, length) at a time: the search is not a gradient program."""
        E = keys_ER.shape[0]
        P = max(r.context_len for r in runs)
        ids, losses = [], []
        for si in range(E):
            base = jax.tree.map(lambda x: x[si], base_E)
            for ri, r in enumerate(runs):
                p = r.context_len
                k_batch, k_init = jax.random.split(keys_ER[si, ri])
                rd = RunData(jnp.ones((p,), bool))
                # one fixed training batch scores every candidate
                loss_of_ids = lambda ids_p: loss({"ids_P": ids_p}, base, rd, k_batch, SEARCH_BATCH)
                best, best_loss, _ = search_prompt(loss_of_ids, cfg.vocab_size, p, k_init)
                ids.append(jnp.concatenate([best, jnp.zeros((P - p,), jnp.int32)]))
                losses.append([best_loss])
        ids_ERP = jnp.stack(ids).reshape(E, len(runs), P)
        return {"ids_P": ids_ERP}, np.array(losses).reshape(E, len(runs), 1)
