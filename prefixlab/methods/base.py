"""What every method shares: the base `Method` (also the `none` method: the frozen base, no context),
the per-run context mask and slot initialisation."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.model import Context
from prefixlab.train import abstract_model

# Context slots carry no position, so nothing in the model bounds P; this bound keeps a padded group's attention
# cost sane and is well above the papers' longest prefixes (P = 12).
MAX_CONTEXT_LEN = 64


class MethodError(ValueError):
    """A method or method setting that does not exist or does not fit the model."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RunData:
    """Per-run constants that are not trained: the context mask (valid_P[i] = i < context length)."""

    valid_P: jax.Array


def slot_init(key, P: int, fn):
    """Slot i is initialised from fold_in(key, i): a run's first p slots do not depend on the padded P."""
    return jax.vmap(lambda i: fn(jax.random.fold_in(key, i)))(jnp.arange(P))


@dataclasses.dataclass(frozen=True)
class Method:
    """Base: the model is the frozen base, no context. Subclasses override what they change."""

    summary: ClassVar[str] = 'the pretrained base as it is'  # its line in `sweep.py --help`

    name: str = "none"
    uses_context: bool = False
    trains_weights: bool = False
    default_lr: float = 0.0

    def graphdef(self, cfg: ModelConfig):
        return abstract_model(cfg)[0]

    def init(self, key, cfg: ModelConfig, base_params, P: int):
        return {}

    def context(self, trainable, run_data: RunData, cfg: ModelConfig, base_params) -> Context | None:
        return None

    def build(self, graphdef, trainable, frozen, run_data: RunData, cfg: ModelConfig):
        return nnx.merge(graphdef, frozen), self.context(trainable, run_data, cfg, frozen)

    def n_params(self, cfg: ModelConfig, p: int | None) -> int:
        return 0


