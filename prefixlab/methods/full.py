"""Full fine-tuning: every weight trains."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from flax import nnx

from prefixlab.methods.base import Method
from prefixlab.methods.registry import register
from prefixlab.model import abstract_model

@register
@dataclasses.dataclass(frozen=True)
class Full(Method):
    """Full fine-tuning: every weight trains (`frozen` is unused)."""

    name: ClassVar[str] = "full"
    summary: ClassVar[str] = 'every weight'
    training: ClassVar[str] = "gradient"
    default_lr: ClassVar[float] = 5e-4

    def init(self, key, cfg, base_params, P):
        return base_params

    def build(self, graphdef, trainable, frozen, run_data, cfg):
        return nnx.merge(graphdef, trainable), None

    def n_params(self, cfg, p):
        return int(sum(x.size for x in jax.tree.leaves(abstract_model(cfg)[1])))
