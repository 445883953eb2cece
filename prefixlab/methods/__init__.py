"""Context-based and weight-based fine-tuning methods: one file per method, registered here by name.

A method knows its trainable parameters' init, how they enter the forward pass (`build` returns the model and
the `Context`), and its trainable-parameter count at a run's true context length. Context methods keep the
base in `frozen` (shared by all runs, never updated, so it stays bit-identical); `full` trains every weight.
Run-varying context lengths share one program: parameters are allocated at the group's longest length P and
`run_data.valid_P` masks the unused slots (their gradients are zero and they are never attended to).
A checkpoint stores `method_settings(method)`; `method_from_settings` rebuilds the method from it.
A new method: one file with a frozen dataclass subclassing `Method`, and one line in METHODS below.
"""

from __future__ import annotations

import dataclasses

from prefixlab.methods.bias import Bias
from prefixlab.methods.base import MAX_CONTEXT_LEN, Method, MethodError, RunData, slot_init
from prefixlab.methods.embedding import Embedding
from prefixlab.methods.full import Full
from prefixlab.methods.ia3 import IA3
from prefixlab.methods.lora import LORA_MODULES, LORA_SCALINGS, MATCH_TOLERANCE, LoRA, match_lora_to_prefix
from prefixlab.methods.prefix import PREFIX_INITS, Prefix
from prefixlab.methods.prefix_kv import PrefixKV
from prefixlab.methods.prompt import HardPrompt
from prefixlab.methods.soft_prompt import SOFT_PROMPT_INITS, SoftPrompt
from prefixlab.methods.unembedding import Unembedding

__all__ = ["METHODS", "get_method", "method_settings", "method_from_settings", "Method", "MethodError", "RunData",
           "slot_init", "MAX_CONTEXT_LEN", "LORA_MODULES", "LORA_SCALINGS", "PREFIX_INITS", "SOFT_PROMPT_INITS", "match_lora_to_prefix", "MATCH_TOLERANCE",
           "Full", "LoRA", "Prefix", "PrefixKV", "HardPrompt", "SoftPrompt"]

# the registry: name -> method class (the order is the sweep's default order)
METHODS = {
    "none": Method,
    "prompt": HardPrompt,
    "soft_prompt": SoftPrompt,
    "prefix": Prefix,
    "prefix_kv": PrefixKV,
    "lora": LoRA,
    "full": Full,
    "embedding": Embedding,
    "unembedding": Unembedding,
    "bias": Bias,
    "ia3": IA3,
}

def get_method(name: str, **settings) -> Method:
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name](**settings)


# fields every method has; the rest are a method's settings
_CONSTANT_FIELDS = ("uses_context", "trains_weights", "default_lr")


def method_settings(method: Method) -> dict:
    """{"name": ..., setting: value}: what a checkpoint stores to rebuild `method` (JSON-ready)."""
    d = {k: v for k, v in dataclasses.asdict(method).items() if k not in _CONSTANT_FIELDS}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def method_from_settings(settings: dict) -> Method:
    """The method that `method_settings` described."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    if d["name"] == "lora":
        d.setdefault("scaling", "peft")  # checkpoints from before LoRA had a scaling setting used alpha / r
    return get_method(d.pop("name"), **d)


