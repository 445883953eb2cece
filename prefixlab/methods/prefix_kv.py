"""PEFT prefix-tuning: learned keys and values at every layer."""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import math

import jax
import jax.numpy as jnp

from prefixlab.methods.base import SlotMethod, slot_init
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
from prefixlab.model import Context

@register
@dataclasses.dataclass(frozen=True)
class PrefixKV(SlotMethod):
    """PEFT prefix-tuning: learned keys and values for P virtual tokens at every layer, optionally through a
    reparameterisation MLP (PEFT `prefix_projection`: embedding -> Linear -> tanh -> Linear)."""

    name: ClassVar[str] = "prefix_kv"
    summary: ClassVar[str] = 'PEFT prefix-tuning: learned keys and values per layer (--prefix_kv.projection: reparam. MLP)'
    aliases: ClassVar[dict] = {"prefix_projection": "projection"}

    projection: bool = setting(False, "through PEFT's reparameterisation MLP (prefix_projection)")
    projection_hidden: int = setting(128, "the reparameterisation MLP's hidden width")

    @property
    def tag(self):
        hidden = "" if self.projection_hidden == 128 else f"-hidden{self.projection_hidden}"
        return self.name + ("-projection" if self.projection else "") + hidden

    def _kv_size(self, cfg):
        return cfg.n_layer * 2 * cfg.n_head * cfg.hd

    def init(self, key, cfg, base_params, P):
        dt, F = cfg.jnp_dtype, self._kv_size(cfg)
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
