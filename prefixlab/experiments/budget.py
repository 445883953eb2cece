"""Whether exp 2's and exp 3's open claims are a matter of the tuning budget: the same prefixes tuned 8x longer.

The quick and decide profiles tune exp 2's sort prefixes ≤ 2,000 steps and exp 3's composition prefix ≤ 1,500, and
every one of those runs used its whole budget: none had converged. This section tunes the same sweeps (as the
scaling section builds them) to PROFILES[profile]["budget"] = {claim: (pretraining steps, tuning budget)} under the
same stopping rule, so a run ends when it solves or plateaus on validation. exp 2 runs on the scaling scan's
longest-pretrained mixture base (where its sort_asc prefix reproduced), exp 3 on exp 3's own base (shared with exp
4); bases come from the shared cache. The verdicts use the scaling section's criteria on the test split at each
run's stop; the figures draw the validation exact match against tuning steps: the tuning-steps axis of each claim.
"""

from __future__ import annotations

import dataclasses

from prefixlab.claim import Claim
from prefixlab.experiments import scaling
from prefixlab.experiments.claims import em, pct, protocol
from prefixlab.experiments.profiles import PROFILES
from prefixlab.experiments.sections import section
from prefixlab.sweep_report import save_figure

# the reference's own results (test split, its model), drawn at the paper profile's tuning budget
EXP2_REF = {"prefix sort_asc": 0.941, "prefix sort_desc": 0.837}
EXP3_REF = {"prefix sort_asc+add1": 0.716, "prefix double_hist": 0.006}


def configs(profile: str) -> dict[str, object]:
    """{run directory name: SweepConfig}: one sweep per claim."""
    sizes = PROFILES[profile]["budget"]
    out = {}
    for claim, base in (("exp2", scaling.exp2_config(profile)), ("exp3", scaling.exp3_config(profile))):
        pre, tune = sizes[claim]
        out[f"budget-{claim}-{tune}"] = dataclasses.replace(base, pretrain_steps=pre, tune_steps=tune)
    return out


def _records_of(records_by_name: dict, claim: str):
    return next((rs for name, rs in records_by_name.items() if name.startswith(f"budget-{claim}-")), None)


def claims(records_by_name: dict, profile: str) -> list[Claim]:
    """`records_by_name`: {run directory name: records} as configs(profile) names them."""
    cfgs, out = configs(profile), []
    e2, e3 = _records_of(records_by_name, "exp2"), _records_of(records_by_name, "exp3")
    name = lambda claim: next(n for n in cfgs if n.startswith(f"budget-{claim}-"))
    if e2:
        cfg = cfgs[name("exp2")]
        for t in scaling.SORTS:
            out.append(Claim(f"budget exp2: prefix P=1 for {t} on its own task, tuned ≤ {cfg.tune_steps:,} steps",
                             f"{pct(em(e2, task=t, method='prefix'))} (others ≤ "
                             f"{100 * max(scaling.exp2_leaks(e2, t)):.1f} %)",
                             f"{100 * EXP2_REF[f'prefix {t}']:.1f} % (paper-exp2)", scaling.exp2_holds(e2, t),
                             protocol(cfg, e2)))
    if e3:
        cfg = cfgs[name("exp3")]
        comp, new = (em(e3, task=t, method="prefix") for t in scaling.EXP3_TASKS)
        out.append(Claim(f"budget exp3: P=10 prefix on sort_asc+add1 vs double_hist, tuned ≤ {cfg.tune_steps:,} steps",
                         f"{pct(comp)} vs {pct(new)}", "71.6 % vs 0.6 % (paper-exp3)", scaling.exp3_holds(e3),
                         protocol(cfg, e3)))
    return out


def figures(records_by_name: dict, figures_dir) -> list:
    """Validation exact match against tuning steps per claim (mean over seeds, 95 % band); the reference's result
    as a star at the paper profile's tuning budget of that section."""
    import matplotlib.pyplot as plt

    from prefixlab.sweep_report import measure_plot, validation_series

    paths = []
    for claim, refs, tune, title in (
            ("exp2", EXP2_REF, PROFILES["paper"]["exp2"][2], "exp 2: sort prefixes (P = 1) on their own task "
             "while tuning"),
            ("exp3", EXP3_REF, PROFILES["paper"]["exp3"][2], "exp 3: P = 10 prefixes, composition vs new task, "
             "while tuning")):
        records = _records_of(records_by_name, claim)
        if not records:
            continue
        series = validation_series([r for r in records if r["method"] == "prefix"], lambda r: f"prefix {r['task']}")
        fig = measure_plot(series, {k: (tune, v) for k, v in refs.items()}, "tuning steps",
                           "validation exact match %", f"{title}; ★ the reference (test split, its model), drawn "
                           f"at the paper profile's budget", ref_label=f"reference (paper-{claim})")
        path = figures_dir / f"budget_{claim}.png"
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


@section("budget", configs=configs)
def run(repro) -> None:
    scaling.run_sweeps_section(repro, configs, claims, figures,
                               "Tuning budget: the open claims of exp 2 and exp 3 tuned longer",
                               "Validation exact match of the selected runs every chunk while tuning (a run that "
                               "stopped keeps its last value), mean over seeds with its 95 % interval as a band; the "
                               "verdicts are the test split's at each run's stop.")
