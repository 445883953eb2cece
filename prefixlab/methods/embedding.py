"""Embedding tuning: only the token embeddings train (as thunnini's embedding-only tuner)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from prefixlab.methods.registry import register
from prefixlab.methods.weight_subset import WeightSubset


@register
@dataclasses.dataclass(frozen=True)
class Embedding(WeightSubset):
    name: ClassVar[str] = "embedding"
    summary: ClassVar[str] = "the token embeddings only (V x d)"

    def selects(self, path):
        return path[0] == "tok_emb"
