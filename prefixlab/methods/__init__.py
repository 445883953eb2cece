"""Context-based and weight-based fine-tuning methods: one file per method, each registering itself.

A method knows its trainable parameters' init, how they enter the forward pass (`build` returns the model and
the `Context`), and its trainable-parameter count at a run's true context length. Context methods keep the
base in `frozen` (shared by all runs, never updated, so it stays bit-identical); `full` trains every weight.
Run-varying context lengths share one program: parameters are allocated at the group's longest length P and
`run_data.valid_P` masks the unused slots (their gradients are zero and they are never attended to).
A checkpoint stores `method_settings(method)`; `method_from_settings` rebuilds the method from it.
A new method: one file here with a frozen dataclass subclassing `Method`, decorated with `@register`; every module
of this package is imported below, so nothing else changes (docs/guide/extending.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from prefixlab.methods.base import MAX_CONTEXT_LEN, TRAINING_KINDS, Method, MethodError, RunData, slot_init
from prefixlab.methods.registry import (METHODS, get_method, method_class, method_from_settings, method_settings,
                                        register)

register(Method)  # "none": the base as it is
# today's methods first, in the order `sweep.py --help` lists them; then any other module of this package
from prefixlab.methods.prompt import HardPrompt  # noqa: E402
from prefixlab.methods.soft_prompt import SOFT_PROMPT_INITS, SoftPrompt  # noqa: E402
from prefixlab.methods.prefix import PREFIX_INITS, Prefix  # noqa: E402
from prefixlab.methods.prefix_kv import PrefixKV  # noqa: E402
from prefixlab.methods.lora import (LORA_MODULES, LORA_SCALINGS, MATCH_TOLERANCE, LoRA,  # noqa: E402
                                    match_lora_to_prefix)
from prefixlab.methods.full import Full  # noqa: E402

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "TRAINING_KINDS", "register", "get_method", "method_class", "method_settings",
           "method_from_settings", "Method", "MethodError", "RunData", "slot_init", "MAX_CONTEXT_LEN", "LORA_MODULES",
           "LORA_SCALINGS", "PREFIX_INITS", "SOFT_PROMPT_INITS", "match_lora_to_prefix", "MATCH_TOLERANCE", "Full",
           "LoRA", "Prefix", "PrefixKV", "HardPrompt", "SoftPrompt"]
