"""Reference prefix-tuning: learned attention-block inputs at every layer."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.methods.base import MethodError, SlotMethod, slot_init
from prefixlab.methods.soft_prompt import SoftPrompt, tokens_tag
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
from prefixlab.model import Context

PREFIX_INITS = ("normal", "sample_vocab", "zero", "text")


@register
@dataclasses.dataclass(frozen=True)
class Prefix(SlotMethod):
    """Reference prefix-tuning: at every layer the attention-block input at the P slots is replaced by learned
    vectors, so the frozen weights compute their keys and values.
    init_mode "normal": N(0, 1) as in the reference. "sample_vocab": what the base computes at the slots when they
    hold the embeddings of sampled tokens, so the prefix starts as exactly the soft prompt with the same key
    (in a causal model) -- at the scale of the model's own activations, which matters without a LayerNorm before
    attention (paper-exp2), where N(0, 1) vectors are ~50x the residual stream and can leave a run stuck.
    "text": what the base computes at the slots when they hold the text `init_tokens` (the vocab soft prompt).
    "zero": zero layer inputs. Not a no-op: the slots' keys are what the frozen weights make of zero (through the
    LayerNorm's bias, if any), so they still take attention mass from the content."""

    name: ClassVar[str] = "prefix"
    summary: ClassVar[str] = ('reference prefix-tuning: P learned vectors replace the attention-block input at every '
                              'layer; init --prefix.init_mode')
    columns: ClassVar[dict] = {"init_mode": "init"}
    aliases: ClassVar[dict] = {"prefix_inits": "init_mode", "prefix_init": "init_mode"}

    init_mode: str = setting("sample_vocab", "normal = N(0, 1) (the reference); sample_vocab = the base's own "
                             "activations for sampled tokens at the slots, i.e. the prefix starts as the sample_vocab "
                             "soft prompt; text = the same for the text init_tokens; zero = zero layer inputs",
                             PREFIX_INITS)
    init_tokens: tuple[int, ...] = setting((), "the token ids init_mode text starts from, repeated to P")

    @property
    def tag(self):
        return (self.name if self.init_mode == "normal" else f"{self.name}-{self.init_mode}") + tokens_tag(
            self.init_tokens if self.init_mode == "text" else ())

    def __post_init__(self):
        if self.init_mode not in PREFIX_INITS:
            raise MethodError(f"prefix init must be one of {PREFIX_INITS}, got {self.init_mode!r}")

    def init(self, key, cfg, base_params, P):
        if self.init_mode in ("sample_vocab", "text"):
            soft = SoftPrompt(init_mode="vocab" if self.init_mode == "text" else "sample_vocab",
                              init_tokens=self.init_tokens)
            embeds_PD = soft.init(key, cfg, base_params, P)["embeds_PD"]
            model = nnx.merge(self.graphdef(cfg), base_params)
            return {"layer_inputs_LPD": model.slot_layer_inputs(embeds_PD)}
        if self.init_mode == "zero":
            return {"layer_inputs_LPD": jnp.zeros((cfg.n_layer, P, cfg.d_model), cfg.jnp_dtype)}
        draw = lambda k: jax.random.normal(k, (cfg.n_layer, cfg.d_model), cfg.jnp_dtype)
        return {"layer_inputs_LPD": jnp.swapaxes(slot_init(key, P, draw), 0, 1)}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, layer_inputs_LPD=trainable["layer_inputs_LPD"])

    def n_params(self, cfg, p):
        return cfg.n_layer * p * cfg.d_model
