"""BitFit: every bias trains (attention and MLP projections, LayerNorms, the head's if it has one)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from prefixlab.methods.registry import register
from prefixlab.methods.weight_subset import WeightSubset


@register
@dataclasses.dataclass(frozen=True)
class Bias(WeightSubset):
    name: ClassVar[str] = "bias"
    summary: ClassVar[str] = "every bias term, LayerNorm biases included (BitFit)"

    def selects(self, path):
        return path[-1] == "bias"
