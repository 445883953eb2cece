"""LoRA: rank-r updates of the target Linear modules (PEFT semantics)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.methods.base import Method, MethodError
from prefixlab.methods.prefix import Prefix
from prefixlab.model import LoRAParam, Transformer
from prefixlab.train import abstract_model

LORA_MODULES = ("q", "k", "v", "o", "fc", "proj")


@dataclasses.dataclass(frozen=True)
class LoRA(Method):
    """Rank-r update (alpha / r) A B on the target Linear modules of every layer; B = 0 at init (PEFT)."""

    summary: ClassVar[str] = 'rank-r LoRA (alpha/r scale, B = 0 at init) on --lora-targets of every layer'

    name: str = "lora"
    trains_weights: bool = True
    default_lr: float = 5e-3
    rank: int = 1
    alpha: float = 1.0
    targets: tuple[str, ...] = ("o", "fc", "proj")

    def __post_init__(self):
        bad = [t for t in self.targets if t not in LORA_MODULES]
        if bad or not self.targets:
            raise MethodError(f"unknown LoRA target(s) {bad or '(none)'}; valid: {', '.join(LORA_MODULES)}")
        if self.rank < 1:
            raise MethodError(f"LoRA rank must be >= 1, got {self.rank}")

    @property
    def spec(self):
        return (self.rank, self.alpha, self.targets)

    def graphdef(self, cfg):
        return abstract_model(cfg, self.spec)[0]

    def init(self, key, cfg, base_params, P):
        model = Transformer(cfg, rngs=nnx.Rngs(params=key), lora=self.spec)
        return nnx.state(model, LoRAParam)

    def build(self, graphdef, trainable, frozen, run_data, cfg):
        return nnx.merge(graphdef, trainable, frozen), None

    def n_params(self, cfg, p):
        D, H, K = cfg.d_model, cfg.n_head, cfg.hd
        widths = (D, *cfg.hidden, D)
        dims = {"q": (D, H * K), "k": (D, H * K), "v": (D, H * K), "o": (H * K, D),
                "fc": (widths[0], widths[1]), "proj": (widths[-2], widths[-1])}
        return cfg.n_layer * sum(self.rank * sum(dims[t]) for t in self.targets)



def match_lora_to_prefix(cfg: ModelConfig, prefix_len: int, targets=("o", "fc", "proj")) -> tuple[LoRA, int, int]:
    """The LoRA rank on `targets` whose trainable-parameter count is closest to a `prefix` of length
    `prefix_len` (ties to the smaller rank). Returns (LoRA, lora params, prefix params).
    Reference: P = 12 on paper-exp3 = rank-1 LoRA on o, fc, proj = 12,288 parameters."""
    target = Prefix().n_params(cfg, prefix_len)
    per_rank = LoRA(rank=1, targets=tuple(targets)).n_params(cfg, None)
    rank = max(1, round(target / per_rank))
    lora = LoRA(rank=rank, targets=tuple(targets))
    return lora, lora.n_params(cfg, None), target
