"""The statistics the sections' verdicts are made of (a `prefixlab.claim.Claim` each). Every verdict here is a pure
function of result records (no files, no training)."""

from __future__ import annotations

import numpy as np

from prefixlab.claim import Claim
from prefixlab.methods import METHODS
from prefixlab.results import is_tuned, mean_std_ci
from prefixlab.selection import selected

__all__ = ["Claim", "pct", "mean", "matching", "em", "cross", "paired_gap", "hierarchy", "protocol"]


def pct(values) -> str:
    """Mean of fractions as a percentage with its 95 % t-interval clipped to [0, 100]."""
    m, _, half = mean_std_ci(list(values))
    if m is None:
        return "n/a"
    if half is None or np.isnan(half):
        return f"{100 * m:.1f} %"
    return f"{100 * m:.1f} % [{100 * max(m - half, 0):.1f}, {100 * min(m + half, 1):.1f}]"


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def matching(records, **match) -> list[dict]:
    """The selected runs (prefixlab/selection.py: one learning rate per setting) matching `match`."""
    return [r for r in selected(records) if all(r.get(k) == v for k, v in match.items())]


def em(records, **match) -> list[float]:
    return [r["exact_match"] for r in matching(records, **match)]


def cross(records, task, other, **match) -> list[float]:
    """Exact match on task `other` of the runs tuned on `task` (and matching `match`)."""
    return [r["cross_exact_match"][other] for r in matching(records, task=task, **match)]


def paired_gap(records, better: dict, worse: dict, tasks) -> tuple[float, float]:
    """Mean and 95 % t half-width of exact match (better − worse), paired by (task, seed): the runs of a pair
    share their base. An expressiveness claim "worse ⊂ better" predicts a gap that is not significantly < 0."""
    by = lambda m: {(r["task"], r["seed"]): r["exact_match"] for r in matching(records, **m) if r["task"] in tasks}
    b, w = by(better), by(worse)
    m, _, half = mean_std_ci([b[k] - w[k] for k in sorted(b.keys() & w.keys())])
    return m, half


def hierarchy(statement: str, records, chain: list[tuple[str, dict]], tasks, note: str = "",
              protocol: str = "") -> Claim:
    """One claim for a chain of methods a ⊂ b ⊂ ...: every paired gap's 95 % interval reaches 0 or above."""
    gaps = [(lo, hi, *paired_gap(records, mhi, mlo, tasks)) for (lo, mlo), (hi, mhi) in zip(chain, chain[1:])]
    means = ", ".join(f"{name} {100 * mean([mean(em(records, task=t, **m)) for t in tasks]):.1f} %" for name, m in chain)
    text = "; ".join(f"{hi} − {lo} = {100 * g:+.1f} pp [±{100 * h:.1f}]" for lo, hi, g, h in gaps)
    return Claim(statement, f"{means}; paired gaps {text}{note}", " ⊂ ".join(name for name, _ in chain),
                 all(g + (0 if np.isnan(h) else h) >= 0 for _, _, g, h in gaps), protocol)


def protocol(config, records=()) -> str:
    """How a sweep's claims were decided, for Claim.protocol: sizes, the tuning budget and stopping rule, the
    learning rates tried (selection on validation), and the steps the selected tuned runs used."""
    rule = config.stop_rule
    stop = (f"stopped at 100 % validation exact match or after {rule.patience} validations without a "
            f"{rule.tol:g}-nat loss gain" if rule else "fixed steps")
    if rule and (rule.min_fraction or rule.patience_growth or rule.trend):
        stop += (f" (none before {rule.min_fraction:.0%} of the budget, patience ≥ {rule.patience_growth:.0%} of "
                 f"the validations done{', none while the training loss still falls' if rule.trend else ''})")
    if config.protocol == "reference":
        stop += "; the reference's optimizer (AdamW, decay 0.01 on the tuned tensors, per-tensor clipping at 1.0)"
    # the groups the sweep runs, so a --match-params LoRA counts though it is not in `methods`
    tuned = [m for m in dict.fromkeys(g.name for g in config.method_groups()) if METHODS[m].training == "gradient"]
    lrs = "; ".join(f"{m} {'/'.join(f'{v:g}' for v in config.learning_rates(m))}" for m in tuned)
    used = [r["steps_used"] for r in matching(records) if is_tuned(r) and r.get("steps_used") is not None]
    steps = f", used {min(used)}–{max(used)}" if used else ""
    return (f"{config.model}, pretrained {config.pretrain_steps} steps on {config.pretrain}; tuned ≤ "
            f"{config.tune_steps} steps{steps}, {stop}; lr {lrs or '-'}"
            f"{', selected on validation' if any(len(config.learning_rates(m)) > 1 for m in tuned) else ''}; "
            f"{config.seeds} seeds, {config.eval_samples} test samples")
