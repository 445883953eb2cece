"""What every method shares: the base `Method` (also the `none` method: the frozen base, no context), the per-run
context mask and slot initialisation."""

from __future__ import annotations

import dataclasses
import itertools
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.methods import settings as S
from prefixlab.model import Context, abstract_model

# Context slots carry no position, so nothing in the model bounds P; this bound keeps a padded group's attention
# cost sane and is well above the papers' longest prefixes (P = 12).
MAX_CONTEXT_LEN = 64

# How a method's parameters are found: "none" (nothing trains: the pretrained base, whose records report its
# pretraining), "search" (`Method.search`, without gradients), "gradient" (AdamW at a grid of learning rates).
TRAINING_KINDS = ("none", "search", "gradient")


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
    """Base: the model is the frozen base, no context. A subclass's dataclass fields are its settings (declare
    them with `settings.setting(default, help)`): a sweep takes several values of each, flags and records are made
    from them. Everything else about a method is a class attribute."""

    name: ClassVar[str] = "none"  # its name in --methods, results and the registry
    summary: ClassVar[str] = "the pretrained base as it is"  # its line in `sweep.py --help`
    training: ClassVar[str] = "none"  # one of TRAINING_KINDS
    default_lr: ClassVar[float] = 0.0  # "gradient": the centre of its default learning-rate grid
    uses_context: ClassVar[bool] = False  # runs at each context length of the sweep (else one run per lr)
    keeps_base_at_init: ClassVar[bool] = True  # its init computes exactly what the base does (tests check it)
    columns: ClassVar[dict] = {}  # setting -> its column in results.jsonl, where the names differ
    aliases: ClassVar[dict] = {}  # an earlier flag or config.json field (underscored) -> the setting it names

    @classmethod
    def sweep_groups(cls, values: dict[str, tuple]) -> list["Method"]:
        """One group per combination of the settings' values ({setting: values}, every setting given)."""
        names = [f.name for f in S.fields(cls)]
        return [cls(**dict(zip(names, combo))) for combo in itertools.product(*(values[n] for n in names))]

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

    def search(self, loss, base_E, runs, keys_ER, cfg: ModelConfig):
        """training "search": (trainable_ER, losses_ERU) for every base and run, found without gradients.
        loss(trainable, base, run_data, key, n): the training loss of one candidate on n examples drawn with key."""
        raise NotImplementedError(f"method {self.name!r} trains by {self.training!r}, not by search")

    @property
    def tag(self) -> str:
        """The group's name in results and under ckpt/<task>/: the name and every setting not at its default."""
        changed = [f for f in S.fields(self) if getattr(self, f.name) != f.default]
        return self.name + "".join(f"-{f.name}{_compact(getattr(self, f.name))}" for f in changed)

    @property
    def key_tag(self) -> str:
        """What its run keys hash (tune.run_key) besides task, length and lr: its groups share seeds unless a
        method adds the settings that should draw others (LoRA its rank)."""
        return f"{self.name}|"

    def record_fields(self) -> dict:
        """The method's own columns in results.jsonl: its settings, named as `columns` says."""
        return {self.columns.get(f.name, f.name): S.as_json(getattr(self, f.name)) for f in S.fields(self)}


@dataclasses.dataclass(frozen=True)
class SlotMethod(Method):
    """A method that tunes what fills the P context slots, by gradient (soft prompt, prefix, PEFT prefix): it runs at
    each of the sweep's context lengths, and its slots change the base's outputs from init on."""

    training: ClassVar[str] = "gradient"
    default_lr: ClassVar[float] = 5e-3  # as every parameter-efficient method, so the default grids are the same
    uses_context: ClassVar[bool] = True
    keeps_base_at_init: ClassVar[bool] = False


def _compact(value) -> str:
    return "".join(map(str, value)) if isinstance(value, tuple) else str(value)
