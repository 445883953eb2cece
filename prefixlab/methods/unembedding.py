"""Unembedding tuning: only the output head trains (as thunnini's unembedding-only tuner)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from prefixlab.methods.registry import register
from prefixlab.methods.weight_subset import WeightSubset


@register
@dataclasses.dataclass(frozen=True)
class Unembedding(WeightSubset):
    name: ClassVar[str] = "unembedding"
    summary: ClassVar[str] = "the output head only (d x V, and its bias if the model has one)"

    def selects(self, path):
        return path[0] == "head"
