"""LoRA: rank-r updates of the target Linear modules (PEFT semantics)."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.methods.adapter import ADAPTER_MODULES, WeightAdapter
from prefixlab.methods.base import MethodError
from prefixlab.methods.prefix import Prefix
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
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


@register
@dataclasses.dataclass(frozen=True)
class LoRA(WeightAdapter):
    """Rank-r update scale * A B on the target Linear modules of every layer; B = 0 at init (PEFT). The scale is
    LORA_SCALINGS[scaling](alpha, rank)."""

    name: ClassVar[str] = "lora"
    summary: ClassVar[str] = 'rank-r LoRA (B = 0 at init) on --lora.targets of every layer, scaled per --lora.scaling'
    param_type: ClassVar[type] = LoRAParam
    label: ClassVar[str] = "LoRA"
    columns: ClassVar[dict] = {"rank": "lora_rank", "alpha": "lora_alpha", "targets": "lora_targets",
                               "scaling": "lora_scaling"}
    aliases: ClassVar[dict] = {"lora_ranks": "rank", "lora_alpha": "alpha", "lora_targets": "targets",
                               "lora_scaling": "scaling"}
    stored_before: ClassVar[dict] = {"scaling": "peft"}  # checkpoints from before LoRA had a scaling used alpha / r

    rank: int = setting(1, "the rank r of the update")
    alpha: float = setting(1.0, "the update's scale factor; --lora.scaling says how it meets the rank")
    targets: tuple[str, ...] = setting(ADAPTER_MODULES, f"target modules from {','.join(ADAPTER_MODULES)} (the "
                                       "reference's o,fc,proj cannot change a one-layer model's attention pattern)")
    scaling: str = setting("constant", "the update's scale: constant = alpha at every rank (so ranks compare at one "
                           "scale), peft = alpha/rank (PEFT, the reference), rslora = alpha/sqrt(rank)",
                           tuple(LORA_SCALINGS))

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise MethodError(f"LoRA rank must be >= 1, got {self.rank}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise MethodError(f"LoRA alpha must be a finite positive number, got {self.alpha}")
        if self.scaling not in LORA_SCALINGS:
            raise MethodError(f"LoRA scaling must be one of {', '.join(LORA_SCALINGS)}, got {self.scaling!r}")

    @property
    def scale(self) -> float:
        return LORA_SCALINGS[self.scaling](self.alpha, self.rank)

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

    @property
    def key_tag(self):
        return f"{self.name}|{self.rank}"


MATCH_TOLERANCE = 0.10  # a matched count within ±10 % of the prefix's counts as matched
REFERENCE_TARGETS = ("o", "fc", "proj")  # the reference's exp 4 (paper-exp3, P = 12: rank 1, 12,288 each)


@functools.lru_cache(maxsize=None)
def _params_per_rank(cfg: ModelConfig, targets: tuple[str, ...]) -> int:
    return LoRA(rank=1, targets=targets).n_params(cfg, None)  # builds an abstract model: cached


def _closest_rank(cfg, target: int, targets) -> LoRA:
    per_rank = _params_per_rank(cfg, tuple(targets))
    return LoRA(rank=max(1, round(target / per_rank)), targets=tuple(targets))


def match_lora_to_prefix(cfg: ModelConfig, prefix_len: int, targets=None) -> tuple[LoRA, int, int]:
    """The LoRA whose trainable-parameter count is closest to a `prefix` of length `prefix_len`. Returns (LoRA, lora
    params, prefix params). targets given: the closest rank on those (ties to the smaller rank). targets None: the
    reference's o,fc,proj when its closest rank lies within MATCH_TOLERANCE, else the closest of every rank on
    every non-empty subset of LORA_MODULES (ties to the most reference modules, then the fewest), so any P gets a match where
    the arithmetic allows one; the ratio says how close it is.
    Reference: P = 12 on paper-exp3 = rank-1 LoRA on o, fc, proj = 12,288 parameters."""
    target = Prefix().n_params(cfg, prefix_len)
    if targets is not None:
        lora = _closest_rank(cfg, target, targets)
        return lora, lora.n_params(cfg, None), target
    lora = _closest_rank(cfg, target, REFERENCE_TARGETS)
    if abs(lora.n_params(cfg, None) / target - 1) > MATCH_TOLERANCE:
        subsets = [tuple(m for i, m in enumerate(LORA_MODULES) if mask >> i & 1) for mask in range(1, 2 ** len(LORA_MODULES))]
        lora = min((_closest_rank(cfg, target, s) for s in subsets), key=lambda c: (
            abs(c.rank * _params_per_rank(cfg, c.targets) - target), -len(set(c.targets) & set(REFERENCE_TARGETS)),
            len(c.targets)))
    return lora, lora.rank * _params_per_rank(cfg, lora.targets), target
