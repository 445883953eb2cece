"""Methods that add parameters to the base's Linear modules (LoRA, IA3): the method swaps each target Linear
for a subclass of it that keeps the base's kernel and bias. The model file knows no particular adapter."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.methods.base import Method, MethodError
from prefixlab.model import Linear, Transformer

ADAPTER_MODULES = ("q", "k", "v", "o", "fc", "proj")


@dataclasses.dataclass(frozen=True)
class WeightAdapter(Method):
    """Wraps the `targets` Linear modules of every block with `wrap`; trains the adapter's own parameter type
    (`param_type`, a subclass of nnx.Param); the base stays frozen."""

    training: ClassVar[str] = "gradient"
    default_lr: ClassVar[float] = 5e-3
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        bad = [t for t in self.targets if t not in ADAPTER_MODULES]
        if bad or not self.targets:
            raise MethodError(f"unknown {self.label} target(s) {bad or '(none)'}; valid: {', '.join(ADAPTER_MODULES)}")

    param_type: ClassVar[type] = nnx.Param  # the adapter's own parameter type, set by each subclass
    label: ClassVar[str] = "adapter"  # its name in messages

    def wrap(self, linear: Linear, name: str, key) -> Linear:
        raise NotImplementedError

    def target_keys(self, key, cfg: ModelConfig) -> list[dict]:
        """One key per (layer, target) for `wrap`; a subclass may number them differently."""
        return [{t: jax.random.fold_in(key, l * len(ADAPTER_MODULES) + ADAPTER_MODULES.index(t)) for t in self.targets}
                for l in range(cfg.n_layer)]

    def adapt(self, model: Transformer, key) -> Transformer:
        """`model` with every target Linear wrapped, in place."""
        for block, keys in zip(model.blocks, self.target_keys(key, model.cfg)):
            for name, linear in block.linears().items():
                if name in self.targets:
                    block.replace_linear(name, self.wrap(linear, name, keys[name]))
        return model

    def _abstract(self, cfg):
        return nnx.split(nnx.eval_shape(lambda: self.adapt(Transformer(cfg, rngs=nnx.Rngs(0)), jax.random.key(0))))

    def graphdef(self, cfg):
        return self._abstract(cfg)[0]

    def init(self, key, cfg, base_params, P):
        return nnx.state(self.adapt(Transformer(cfg, rngs=nnx.Rngs(params=key)), key), self.param_type)

    def build(self, graphdef, trainable, frozen, run_data, cfg):
        return nnx.merge(graphdef, trainable, frozen), None

    def n_params(self, cfg, p):
        return int(sum(x.size for x in jax.tree.leaves(nnx.state(nnx.merge(*self._abstract(cfg)), self.param_type))))
