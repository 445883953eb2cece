"""LoRA: rank-r updates of the target Linear modules (PEFT semantics)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.methods.adapter import ADAPTER_MODULES, WeightAdapter
from prefixlab.methods.base import MethodError
from prefixlab.methods.prefix import Prefix
from prefixlab.model import Linear, linear_names

LORA_MODULES = ADAPTER_MODULES
# The update's scale: constant = alpha whatever the rank (so the default alpha 1 updates every rank at the same
# scale); peft = alpha / r (PEFT's and the reference's); rslora = alpha / sqrt(r) (rank-stabilised LoRA).
LORA_SCALINGS = {"constant": lambda alpha, r: alpha, "peft": lambda alpha, r: alpha / r,
                 "rslora": lambda alpha, r: alpha / math.sqrt(r)}


class LoRAParam(nnx.LoRAParam):
    """LoRA factors (a subclass so that filters can tell them from any other `nnx.LoRAParam` use)."""


class LoRALinear(Linear):
    """y = x W + scale x A B + b (scale from LORA_SCALINGS); B = 0 at init, A Kaiming-uniform as in PEFT / the
    reference (a = sqrt(5) -> bound 1 / sqrt(d_in))."""

    def __init__(self, base: Linear, rank: int, scale: float, key):
        self.share_weights(base)
        d_in, d_out = base.kernel.shape
        dtype, bound = base.kernel.dtype, 1.0 / math.sqrt(d_in)
        self.lora_a = LoRAParam(jax.random.uniform(key, (d_in, rank), dtype, -bound, bound))
        self.lora_b = LoRAParam(jnp.zeros((rank, d_out), dtype))
        self.lora_scale = scale

    def project(self, x):
        return super().project(x) + ((x @ self.lora_a[...]) @ self.lora_b[...]) * self.lora_scale


@dataclasses.dataclass(frozen=True)
class LoRA(WeightAdapter):
    """Rank-r update scale * A B on the target Linear modules of every layer; B = 0 at init (PEFT). The scale is
    LORA_SCALINGS[scaling](alpha, rank)."""

    summary: ClassVar[str] = 'rank-r LoRA (B = 0 at init) on --lora-targets of every layer, scaled per --lora-scaling'
    param_type: ClassVar[type] = LoRAParam
    label: ClassVar[str] = "LoRA"

    name: str = "lora"
    rank: int = 1
    alpha: float = 1.0
    targets: tuple[str, ...] = ("o", "fc", "proj")
    scaling: str = "constant"

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise MethodError(f"LoRA rank must be >= 1, got {self.rank}")
        if self.scaling not in LORA_SCALINGS:
            raise MethodError(f"LoRA scaling must be one of {', '.join(LORA_SCALINGS)}, got {self.scaling!r}")

    @property
    def scale(self) -> float:
        return LORA_SCALINGS[self.scaling](self.alpha, self.rank)

    @classmethod
    def sweep_groups(cls, config):
        return [cls(rank=r, alpha=config.lora_alpha, targets=config.lora_targets, scaling=config.lora_scaling)
                for r in config.lora_ranks]

    def wrap(self, linear, name, key):
        return LoRALinear(linear, self.rank, self.scale, key)

    def target_keys(self, key, cfg):
        """A's key is the draw the base constructor's params stream would make right after the target's kernel
        (how v1 built LoRA inline), so a seed gives the same LoRA init as before."""
        names = linear_names(cfg)
        draw = 2 if cfg.pos_emb else 1  # tok_emb (and pos_emb) come first
        keys = []
        for _ in range(cfg.n_layer):
            keys.append({})
            for name in names:
                draw += 1  # the kernel
                if name in self.targets:
                    keys[-1][name] = jax.random.fold_in(key, draw)
                    draw += 1
        return keys

    @property
    def tag(self):
        return f"lora-r{self.rank}-" + "".join(self.targets)

    def record_fields(self):
        return {**super().record_fields(), "lora_rank": self.rank, "lora_targets": ",".join(self.targets),
                "lora_scaling": self.scaling}


def match_lora_to_prefix(cfg: ModelConfig, prefix_len: int, targets=("o", "fc", "proj")) -> tuple[LoRA, int, int]:
    """The LoRA rank on `targets` whose trainable-parameter count is closest to a `prefix` of length
    `prefix_len` (ties to the smaller rank). Returns (LoRA, lora params, prefix params).
    Reference: P = 12 on paper-exp3 = rank-1 LoRA on o, fc, proj = 12,288 parameters."""
    target = Prefix().n_params(cfg, prefix_len)
    per_rank = LoRA(rank=1, targets=tuple(targets)).n_params(cfg, None)
    rank = max(1, round(target / per_rank))
    lora = LoRA(rank=rank, targets=tuple(targets))
    return lora, lora.n_params(cfg, None), target
