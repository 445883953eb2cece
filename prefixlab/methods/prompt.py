"""Hard prompts: P discrete tokens found by search."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from prefixlab.methods.base import Method, slot_init
from prefixlab.model import Context

@dataclasses.dataclass(frozen=True)
class HardPrompt(Method):
    """P hard tokens prepended (their token embeddings fill the slots). Found by search, not gradients:
    see `prefixlab.prompt_search`. `trainable` holds the token ids."""

    summary: ClassVar[str] = 'P hard tokens; exhaustive search if V^P <= 10,000, else greedy coordinate search'

    name: str = "prompt"
    uses_context: bool = True

    def init(self, key, cfg, base_params, P):
        return {"ids_P": slot_init(key, P, lambda k: jax.random.randint(k, (), 0, cfg.vocab_size))}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, embeds_PD=base_params["tok_emb"][...][trainable["ids_P"]])

    def n_params(self, cfg, p):
        return p  # discrete tokens, not continuous parameters
