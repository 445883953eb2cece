"""IA3: learned per-feature scales on the outputs of k and v and on the input of the MLP's down projection,
ones at init (PEFT semantics: a `feedforward` target scales its input, any other target its output)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from prefixlab.methods.adapter import WeightAdapter
from prefixlab.methods.base import MethodError
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
from prefixlab.model import Linear


class IA3Param(nnx.Param):
    """IA3 scale vectors."""


class IA3Linear(Linear):
    """(x l) W + b for a feedforward target, else (x W + b) l; l = 1 at init, so the base is unchanged."""

    def __init__(self, base: Linear, scale_input: bool):
        self.share_weights(base)
        d_in, d_out = base.kernel.shape
        self.ia3_scale = IA3Param(jnp.ones((d_in if scale_input else d_out,), base.kernel.dtype))
        self.scale_input = scale_input

    def __call__(self, x):
        scale = lambda y: y * jnp.expand_dims(self.ia3_scale[...], tuple(range(y.ndim - 1)))
        return super().__call__(scale(x)) if self.scale_input else scale(super().__call__(x))


@register
@dataclasses.dataclass(frozen=True)
class IA3(WeightAdapter):
    name: ClassVar[str] = "ia3"
    summary: ClassVar[str] = 'IA3 scales (ones at init) on k, v outputs and the MLP hidden (PEFT)'
    param_type: ClassVar[type] = IA3Param
    label: ClassVar[str] = "IA3"

    targets: tuple[str, ...] = setting(("k", "v", "proj"), "the Linear modules whose outputs (inputs, for "
                                       "feedforward ones) it scales")
    feedforward: tuple[str, ...] = setting(("proj",), "targets scaled at their input (PEFT's feedforward modules)")

    def __post_init__(self):
        super().__post_init__()
        if not set(self.feedforward) <= set(self.targets):
            raise MethodError(f"IA3 feedforward modules {list(self.feedforward)} must be among its targets")

    def wrap(self, linear, name, key):
        return IA3Linear(linear, name in self.feedforward)
