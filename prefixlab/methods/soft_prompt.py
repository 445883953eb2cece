"""Prompt tuning: P learned input embeddings."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from prefixlab.methods.base import MethodError, SlotMethod, slot_init
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
from prefixlab.model import Context

SOFT_PROMPT_INITS = ("random", "vocab", "sample_vocab", "zero")


@register
@dataclasses.dataclass(frozen=True)
class SoftPrompt(SlotMethod):
    """P learned input embeddings at the input layer only (prompt tuning)."""

    name: ClassVar[str] = "soft_prompt"
    summary: ClassVar[str] = 'P learned input embeddings (prompt tuning); init --soft_prompt.init_mode'
    columns: ClassVar[dict] = {"init_mode": "init"}
    aliases: ClassVar[dict] = {"soft_prompt_init": "init_mode"}

    init_mode: str = setting("sample_vocab", "the embeddings' init: random = N(0, 1); vocab = the embeddings of "
                             "init_tokens; sample_vocab = of sampled tokens (PEFT's RANDOM, TEXT, SAMPLE_VOCAB); "
                             "zero = zero vectors (the slots still take attention)",
                             SOFT_PROMPT_INITS)
    init_tokens: tuple[int, ...] = setting((), "the token ids init_mode vocab starts from, repeated to P")

    @property
    def tag(self):
        return f"{self.name}-{self.init_mode}" + tokens_tag(self.init_tokens if self.init_mode == "vocab" else ())

    def __post_init__(self):
        if self.init_mode not in SOFT_PROMPT_INITS:
            raise MethodError(f"soft prompt init must be one of {SOFT_PROMPT_INITS}, got {self.init_mode!r}")

    def init(self, key, cfg, base_params, P):
        emb_VD = base_params["tok_emb"][...]
        if self.init_mode == "zero":
            return {"embeds_PD": jnp.zeros((P, cfg.d_model), emb_VD.dtype)}
        if self.init_mode == "random":
            return {"embeds_PD": slot_init(key, P, lambda k: jax.random.normal(k, (cfg.d_model,), emb_VD.dtype))}
        if self.init_mode == "vocab":
            return {"embeds_PD": emb_VD[text_ids(self.init_tokens, P, cfg, "soft prompt init 'vocab'")]}
        ids = slot_init(key, P, lambda k: jax.random.randint(k, (), 0, cfg.vocab_size))
        return {"embeds_PD": emb_VD[ids]}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, embeds_PD=trainable["embeds_PD"])

    def n_params(self, cfg, p):
        return p * cfg.d_model


def text_ids(tokens: tuple[int, ...], P: int, cfg, what: str):
    """The P slot tokens of a text init: `tokens` repeated to P (a text shorter than P repeats, as PEFT's TEXT)."""
    if not tokens:
        raise MethodError(f"{what} needs init_tokens (the text's token ids)")
    bad = [t for t in tokens if not 0 <= t < cfg.vocab_size]
    if bad:
        raise MethodError(f"{what}: init_tokens {bad} are outside the vocabulary 0..{cfg.vocab_size - 1}")
    return jnp.array([tokens[i % len(tokens)] for i in range(P)])


def tokens_tag(tokens: tuple[int, ...]) -> str:
    """The text's part of a group's tag (for an init that reads the text): groups that start from different texts stay
    apart."""
    return f"-tokens{'_'.join(map(str, tokens))}" if tokens else ""
