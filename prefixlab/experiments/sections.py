"""The reproduction's sections: each section module registers its own with `@section(name, configs=...)` on its
run function, so a new section is one new module here and nothing else. `registered()` imports every module of
this package and returns them by name."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Section:
    """name: its --sections name; run(repro): runs its sweeps, claims and figures into the report (a
    `prefixlab.experiments.Reproduction`); configs(profile): its sweeps {run directory name: SweepConfig}, or None
    for a section without sweeps of its own."""

    name: str
    run: Callable
    configs: Callable | None = None


_SECTIONS: dict[str, Section] = {}


def section(name: str, configs: Callable | None = None):
    """Decorator of a section's run function: registers it under `name`."""
    def register(run: Callable) -> Callable:
        _SECTIONS[name] = Section(name, run, configs)
        return run
    return register


def registered() -> dict[str, Section]:
    """Every section, by name in alphabetical order (the modules of prefixlab.experiments are imported first)."""
    import prefixlab.experiments as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(sorted(_SECTIONS.items()))
