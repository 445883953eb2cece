"""Prompt tuning: P learned input embeddings."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from prefixlab.methods.base import Method, MethodError, slot_init
from prefixlab.model import Context

SOFT_PROMPT_INITS = ("random", "vocab", "sample_vocab")


@dataclasses.dataclass(frozen=True)
class SoftPrompt(Method):
    """P learned input embeddings at the input layer only (prompt tuning)."""

    summary: ClassVar[str] = 'P learned input embeddings (prompt tuning); init --soft-prompt-init'

    name: str = "soft_prompt"
    uses_context: bool = True
    default_lr: float = 5e-3
    init_mode: str = "sample_vocab"  # PEFT: RANDOM, TEXT (= vocab), SAMPLE_VOCAB
    init_tokens: tuple[int, ...] = ()  # for init_mode "vocab"

    @classmethod
    def sweep_groups(cls, config):
        return [cls(init_mode=config.soft_prompt_init)]

    @property
    def tag(self):
        return f"{self.name}-{self.init_mode}"

    def __post_init__(self):
        if self.init_mode not in SOFT_PROMPT_INITS:
            raise MethodError(f"soft prompt init must be one of {SOFT_PROMPT_INITS}, got {self.init_mode!r}")

    def init(self, key, cfg, base_params, P):
        emb_VD = base_params["tok_emb"][...]
        if self.init_mode == "random":
            return {"embeds_PD": slot_init(key, P, lambda k: jax.random.normal(k, (cfg.d_model,), emb_VD.dtype))}
        if self.init_mode == "vocab":
            if not self.init_tokens:
                raise MethodError("soft prompt init 'vocab' needs init_tokens")
            ids = jnp.array([self.init_tokens[i % len(self.init_tokens)] for i in range(P)])
            return {"embeds_PD": emb_VD[ids]}
        ids = slot_init(key, P, lambda k: jax.random.randint(k, (), 0, cfg.vocab_size))
        return {"embeds_PD": emb_VD[ids]}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, embeds_PD=trainable["embeds_PD"])

    def n_params(self, cfg, p):
        return p * cfg.d_model
