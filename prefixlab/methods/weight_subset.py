"""Methods that tune a subset of the base's own weights (embeddings, head, biases): the rest stays frozen."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from flax import nnx

from prefixlab.methods.base import Method
from prefixlab.model import abstract_model


@dataclasses.dataclass(frozen=True)
class WeightSubset(Method):
    """Trains the base weights whose path `selects`; a subclass names them. `trainable` is that part of the
    base's state, initialised to the pretrained values; `frozen` supplies the rest."""

    training: ClassVar[str] = "gradient"
    default_lr: ClassVar[float] = 5e-3

    def selects(self, path: tuple) -> bool:
        raise NotImplementedError

    def _part(self, state, trained: bool):
        return nnx.filter_state(state, lambda path, _: self.selects(path) == trained)

    def init(self, key, cfg, base_params, P):
        return self._part(base_params, True)

    def build(self, graphdef, trainable, frozen, run_data, cfg):
        return nnx.merge(graphdef, trainable, self._part(frozen, False)), None

    def n_params(self, cfg, p):
        return int(sum(x.size for x in jax.tree.leaves(self._part(abstract_model(cfg)[1], True))))

