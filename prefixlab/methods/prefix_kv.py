"""PEFT prefix-tuning: learned keys and values at every layer."""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import math

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.methods.base import MethodError, SlotMethod, slot_init
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
from prefixlab.methods.soft_prompt import SoftPrompt, tokens_tag
from prefixlab.model import Context

PREFIX_KV_INITS = ("normal", "sample_vocab", "zero", "text")

@register
@dataclasses.dataclass(frozen=True)
class PrefixKV(SlotMethod):
    """PEFT prefix-tuning: learned keys and values for P virtual tokens at every layer, optionally through a
    reparameterisation MLP (PEFT `prefix_projection`: embedding -> Linear -> tanh -> Linear).
    init_mode "normal": N(0, 1) keys and values. "sample_vocab" / "text": the keys and values the base computes at
    the slots when they hold sampled tokens / the text `init_tokens` (a "cartridge": the prefix starts as that hard
    or soft prompt exactly, in a causal model). "zero": zero keys and values -- not a no-op: every slot scores 0
    against every query, so the slots take attention mass (softmax weight e^0 each) and give back a zero value,
    which scales the content's attention output down."""

    name: ClassVar[str] = "prefix_kv"
    summary: ClassVar[str] = 'PEFT prefix-tuning: learned keys and values per layer (--prefix_kv.projection: reparam. MLP)'
    aliases: ClassVar[dict] = {"prefix_projection": "projection"}
    columns: ClassVar[dict] = {"init_mode": "init"}  # as soft_prompt's and prefix's

    projection: bool = setting(False, "through PEFT's reparameterisation MLP (prefix_projection)")
    projection_hidden: int = setting(128, "the reparameterisation MLP's hidden width")
    init_mode: str = setting("normal", "normal = N(0, 1); sample_vocab / text = the base's keys and values for "
                             "sampled tokens / the text init_tokens at the slots; zero = zero keys and values "
                             "(without projection)", PREFIX_KV_INITS)
    init_tokens: tuple[int, ...] = setting((), "the token ids init_mode text starts from, repeated to P")

    def __post_init__(self):
        if self.init_mode not in PREFIX_KV_INITS:
            raise MethodError(f"prefix_kv init must be one of {PREFIX_KV_INITS}, got {self.init_mode!r}")
        if self.projection and self.init_mode != "normal":
            raise MethodError(f"prefix_kv init {self.init_mode!r} sets the keys and values themselves: it needs "
                              "projection false")

    @property
    def tag(self):
        hidden = "" if self.projection_hidden == 128 else f"-hidden{self.projection_hidden}"
        init = "" if self.init_mode == "normal" else f"-{self.init_mode}"
        return self.name + ("-projection" if self.projection else "") + hidden + init + tokens_tag(
            self.init_tokens if self.init_mode == "text" else ())

    def _kv_size(self, cfg):
        return cfg.n_layer * 2 * cfg.n_head * cfg.hd

    def init(self, key, cfg, base_params, P):
        dt, F = cfg.jnp_dtype, self._kv_size(cfg)
        if self.init_mode == "zero":
            return {"kv_PF": jnp.zeros((P, F), dt)}
        if self.init_mode in ("sample_vocab", "text"):
            return {"kv_PF": self._base_keys_values(key, cfg, base_params, P).astype(dt)}
        if not self.projection:
            return {"kv_PF": slot_init(key, P, lambda k: jax.random.normal(k, (F,), dt))}
        k_emb, k1, k2 = jax.random.split(key, 3)
        D, Hd = cfg.d_model, self.projection_hidden
        lim1, lim2 = 1 / math.sqrt(D), 1 / math.sqrt(Hd)  # PyTorch Linear default init bounds
        return {
            "emb_PD": slot_init(k_emb, P, lambda k: jax.random.normal(k, (D,), dt)),
            "w1": jax.random.uniform(k1, (D, Hd), dt, -lim1, lim1), "b1": jnp.zeros((Hd,), dt),
            "w2": jax.random.uniform(k2, (Hd, F), dt, -lim2, lim2), "b2": jnp.zeros((F,), dt),
        }

    def _base_keys_values(self, key, cfg, base_params, P):
        """(P, F): every layer's keys and values of the slots as the base computes them for the init's tokens."""
        soft = SoftPrompt(init_mode="vocab" if self.init_mode == "text" else "sample_vocab",
                          init_tokens=self.init_tokens)
        embeds_PD = soft.init(key, cfg, base_params, P)["embeds_PD"]
        model = nnx.merge(self.graphdef(cfg), base_params)
        per_layer = []
        for block, x_PD in zip(model.blocks, model.slot_layer_inputs(embeds_PD)):
            _, k_1PHK, v_1PHK = block.attn.qkv(block._ln(block.ln1, x_PD[None]))
            per_layer.append(jnp.stack([k_1PHK[0], v_1PHK[0]]))  # (2, P, H, K)
        return jnp.stack(per_layer).transpose(2, 0, 1, 3, 4).reshape(P, -1)  # (P, L, 2, H, K) as keys_values reads

    def keys_values(self, trainable, cfg):
        """(keys_LPHK, values_LPHK): what a checkpoint of this method stores (projection applied)."""
        if self.projection:
            t = trainable
            kv_PF = jnp.tanh(t["emb_PD"] @ t["w1"] + t["b1"][None]) @ t["w2"] + t["b2"][None]
        else:
            kv_PF = trainable["kv_PF"]
        P = kv_PF.shape[0]
        kv = kv_PF.reshape(P, cfg.n_layer, 2, cfg.n_head, cfg.hd).transpose(2, 1, 0, 3, 4)
        return kv[0], kv[1]

    def context(self, trainable, run_data, cfg, base_params):
        keys, values = self.keys_values(trainable, cfg)
        return Context(run_data.valid_P, keys_LPHK=keys, values_LPHK=values)

    def n_params(self, cfg, p):
        F = self._kv_size(cfg)
        if not self.projection:
            return p * F
        D, Hd = cfg.d_model, self.projection_hidden
        return p * D + D * Hd + Hd + Hd * F + F
