"""A section's time before it runs, for the ETA a long reproduction prints up front.

Every training step is costed from the model's FLOPs at this machine's own matmul rate at the model's shapes
(`benchmark.matmul_peak_at_shapes`, measured once per model: a second or two) and the fraction of that rate a step
reaches (`STEP_EFFICIENCY`, measured: docs/performance.md). Tuning steps are costed as pretraining steps and every
run is charged its whole budget, so the figure is an upper bound: runs that stop early, or a cached base, finish
sooner. Each base is charged once per reproduction (sections that share one, like exp 3 and exp 4, pay once).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

STEP_EFFICIENCY = 0.6  # a training step's model FLOPs / the matmul rate at its shapes (0.65-0.69 for paper-exp3)
GROUP_OVERHEAD_S = 10.0  # compiling a group's programs, evaluating it


@dataclasses.dataclass(frozen=True)
class Estimate:
    pretrain_steps: int  # base seed-steps still to train (cached bases excluded)
    tune_steps: int  # run-steps, each run at its whole budget
    groups: int
    seconds: float


def _step_seconds(model: str, rates: dict) -> float:
    from prefixlab.benchmark import SEQ, matmul_peak_at_shapes
    from prefixlab.config import preset
    from prefixlab.tasks import FIRST_TARGET
    from prefixlab.train import model_flops_per_step

    if model not in rates:
        rates[model] = matmul_peak_at_shapes(model)["gflops"] * 1e9
    flops = model_flops_per_step(preset(model), 64, SEQ, scored=SEQ - FIRST_TARGET)
    return flops / (rates[model] * STEP_EFFICIENCY)


def estimate(configs, rates: dict | None = None, bases_seen: set | None = None) -> Estimate:
    """The cost of running `configs` (SweepConfigs) one after another. rates: {model: FLOP/s} measured so far (filled
    in); bases_seen: cache keys of bases already charged (filled in)."""
    from prefixlab.bases import base_dir, pretrain_config
    from prefixlab.checkpoint import exists
    from prefixlab.sweep import _base_settings
    from prefixlab.tune import group_runs

    rates = {} if rates is None else rates
    bases_seen = set() if bases_seen is None else bases_seen
    pre = tune = groups = 0
    seconds = 0.0
    for config in configs:
        step = _step_seconds(config.model, rates)
        settings = _base_settings(config)
        key = pretrain_config(**{k: settings[k] for k in ("cfg", "mixture", "steps", "batch_size", "optim",
                                                           "stop_rule", "val_samples")})
        directory = base_dir(Path(config.resolved().cache_dir), key)
        for seed in config.base_seeds:
            if (str(directory), seed) not in bases_seen and not exists(directory / f"seed-{seed}"):
                bases_seen.add((str(directory), seed))
                pre += config.pretrain_steps
                seconds += config.pretrain_steps * step
        for task, method in config.groups():
            groups += 1
            seconds += GROUP_OVERHEAD_S
            if method.name in ("none", "prompt"):
                continue
            runs = len(group_runs(method, config.prefix_lengths, config.learning_rates(method.name))) * config.seeds
            tune += runs * config.tune_steps
            seconds += runs * config.tune_steps * step
    return Estimate(pre, tune, groups, seconds)


def section_configs(section: str, profile: str) -> list:
    """The sweeps of a registered section (none for a section without sweeps, like spread or theory)."""
    from prefixlab.experiments.sections import registered

    found = registered().get(section)
    return [] if found is None or found.configs is None else list(found.configs(profile).values())


def describe(section: str, e: Estimate) -> str:
    hours, rest = divmod(int(e.seconds), 3600)
    return (f"[{section}] ETA ≤ {hours} h {rest // 60:02d} min: {e.pretrain_steps:,} pretraining seed-steps, "
            f"{e.tune_steps:,} tuning run-steps at their whole budgets, {e.groups} groups (an upper bound: runs stop "
            f"early, cached bases are free)")
