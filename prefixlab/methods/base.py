"""What every method shares: the base `Method` (also the `none` method: the frozen base, no context),
the per-run context mask and slot initialisation."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.model import Context, abstract_model

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

    @classmethod
    def sweep_groups(cls, config) -> list["Method"]:
        """The groups a sweep's config (a SweepConfig) asks of this method: one, with default settings."""
        return [cls()]

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

    @property
    def tag(self) -> str:
        """The group's name in results and under ckpt/<task>/: the name and any setting that changes the shape
        or the init of what trains."""
        return self.name

    def record_fields(self) -> dict:
        """The method's own columns in results.jsonl, beside task and method."""
        return {"init": getattr(self, "init_mode", None), "lora_rank": None, "lora_targets": None, "lora_scaling": None}


