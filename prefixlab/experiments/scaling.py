"""Where exp 2's and exp 3's open claims emerge: each claim's measure against the base's pretraining steps.

For every step count of PROFILES[profile]["scaling"] one sweep: exp 2's P=1 prefixes on the two sort tasks (scored
on all four mixture tasks) on a mixture base pretrained that long, and exp 3's P=10 prefixes on the composition
sort_asc+add1 and the new task double_hist; everything else as the profile's exp 2 / exp 3. Bases come from the
shared cache, so a point equal to the exp 2 / exp 3 section's own pretraining is not trained twice. The figures mark
the reference's own point (its model and pretraining, which differ from ours: see the legend). A scan's verdict is
the claim's criterion at its longest pretraining; the measured text gives every point, so the trend is in the table.
"""

from __future__ import annotations

import dataclasses

from prefixlab.claim import Claim
from prefixlab.experiments import exp2, exp3
from prefixlab.experiments.claims import cross, em, mean, pct, protocol
from prefixlab.experiments.profiles import MIX, PROFILES
from prefixlab.experiments.sections import section
from prefixlab.sweep_report import save_figure

SORTS = ("sort_asc", "sort_desc")
EXP3_TASKS = ("sort_asc+add1", "double_hist")
# the reference's own points: (pretraining steps, exact match) with its model
EXP2_REF = {"prefix sort_asc": (20000, 0.941), "prefix sort_desc": (20000, 0.837),
            "base sort_asc": (20000, 0.31), "base sort_desc": (20000, 0.19)}
EXP3_REF = {"prefix sort_asc+add1": (40000, 0.716), "prefix double_hist": (40000, 0.006)}


def exp2_config(profile: str):
    """exp 2's P=1 prefixes on the two sorts (scored on all four mixture tasks), as the profile's exp 2."""
    return dataclasses.replace(exp2.configs(profile)["exp2"], methods=("none", "prefix"),
                               settings={"prefix": {"init_mode": ("sample_vocab",)}}, tune_tasks=SORTS)


def exp3_config(profile: str):
    """exp 3's P=10 prefixes on the composition and the new task, as the profile's exp 3."""
    return dataclasses.replace(exp3.configs(profile)["exp3"], tasks=EXP3_TASKS, methods=("none", "prefix"))


def exp2_holds(records, task: str) -> bool:
    """exp 2's criterion for a sort prefix: ≥ 80 % on its own task, ≤ 5 % on each other mixture task."""
    return mean(em(records, task=task, method="prefix")) >= 0.8 and max(exp2_leaks(records, task)) <= 0.05


def exp2_leaks(records, task: str) -> list[float]:
    """Exact match on the other mixture tasks of the prefixes tuned on `task`."""
    return [x for o in MIX.split(",") if o != task for x in cross(records, task, o, method="prefix")]


def exp3_holds(records) -> bool:
    """exp 3's criterion: the composition beats the new task by > 10 pp, and the new task stays ≤ 5 %."""
    comp, new = (mean(em(records, task=t, method="prefix")) for t in EXP3_TASKS)
    return comp > new + 0.1 and new <= 0.05


def configs(profile: str) -> dict[str, object]:
    """{run directory name: SweepConfig}: one sweep per claim and pretraining step count."""
    points = PROFILES[profile]["scaling"]
    e2, e3 = exp2_config(profile), exp3_config(profile)
    return {**{f"scaling-exp2-{s}": dataclasses.replace(e2, pretrain_steps=s) for s in points["exp2"]},
            **{f"scaling-exp3-{s}": dataclasses.replace(e3, pretrain_steps=s) for s in points["exp3"]}}


def _by_steps(records_by_name: dict, claim: str) -> dict[int, list[dict]]:
    return {int(name.rsplit("-", 1)[1]): rs for name, rs in records_by_name.items()
            if name.startswith(f"scaling-{claim}-")}


def exp2_series(by_steps: dict[int, list[dict]]) -> dict:
    """{label: [(pretraining steps, [exact match per seed])]}: each sort prefix on its own task, and the base."""
    series = {}
    for t in SORTS:
        series[f"prefix {t}"] = [(s, em(rs, task=t, method="prefix")) for s, rs in by_steps.items()]
        series[f"base {t}"] = [(s, em(rs, task=t, method="none")) for s, rs in by_steps.items()]
    return series


def exp3_series(by_steps: dict[int, list[dict]]) -> dict:
    series = {f"prefix {t}": [(s, em(rs, task=t, method="prefix")) for s, rs in by_steps.items()] for t in EXP3_TASKS}
    series["base sort_asc+add1"] = [(s, em(rs, task="sort_asc+add1", method="none")) for s, rs in by_steps.items()]
    return series


def _points_text(by_steps, text_of) -> str:
    return "; ".join(f"{s:,}: {text_of(rs)}" for s, rs in sorted(by_steps.items()))


def claims(records_by_name: dict, profile: str) -> list[Claim]:
    """`records_by_name`: {run directory name: records} as configs(profile) names them."""
    cfgs, out = configs(profile), []
    e2 = _by_steps(records_by_name, "exp2")
    if e2:
        top = max(e2)
        how = (protocol(cfgs[f"scaling-exp2-{top}"], e2[top]) + f"; pretraining scanned over "
               f"{', '.join(f'{s:,}' for s in sorted(e2))} steps")
        for t in SORTS:
            text = _points_text(e2, lambda rs: f"{pct(em(rs, task=t, method='prefix'))} (base "
                                f"{pct(em(rs, task=t, method='none'))}, others ≤ {100 * max(exp2_leaks(rs, t)):.1f} %)")
            out.append(Claim(f"scaling exp2: prefix P=1 for {t} on its own task vs the base's pretraining steps",
                             text, f"{100 * EXP2_REF[f'prefix {t}'][1]:.1f} % (paper-exp2, 20,000 steps)",
                             exp2_holds(e2[top], t), how))
    e3 = _by_steps(records_by_name, "exp3")
    if e3:
        top = max(e3)
        how = (protocol(cfgs[f"scaling-exp3-{top}"], e3[top]) + f"; pretraining scanned over "
               f"{', '.join(f'{s:,}' for s in sorted(e3))} steps")
        comp = lambda rs: em(rs, task="sort_asc+add1", method="prefix")
        new = lambda rs: em(rs, task="double_hist", method="prefix")
        out.append(Claim("scaling exp3: P=10 prefix on sort_asc+add1 vs double_hist vs the base's pretraining steps",
                         _points_text(e3, lambda rs: f"{pct(comp(rs))} vs {pct(new(rs))}"),
                         "71.6 % vs 0.6 % (paper-exp3, 40,000 steps)", exp3_holds(e3[top]), how))
    return out


def figures(records_by_name: dict, figures_dir) -> list:
    import matplotlib.pyplot as plt

    from prefixlab.sweep_report import measure_plot

    paths = []
    for claim, series_of, refs, title in (
            ("exp2", exp2_series, EXP2_REF, "exp 2: sort prefixes (P = 1) on their own task vs the mixture base's "
             "pretraining; ★ the reference (paper-exp2)"),
            ("exp3", exp3_series, EXP3_REF, "exp 3: P = 10 prefixes, composition vs new task, vs the base's "
             "pretraining; ★ the reference (paper-exp3)")):
        by_steps = _by_steps(records_by_name, claim)
        if not by_steps:
            continue
        fig = measure_plot(series_of(by_steps), refs, "pretraining steps of the base", title=title,
                           ref_label=f"reference (paper-{claim}, its model)", log_x=True)
        path = figures_dir / f"scaling_{claim}.png"
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def run_sweeps_section(repro, configs_of, claims_of, figures_of, title: str, text: str) -> None:
    """A section made of named sweeps: run them, add claims_of(records by name, profile) to the report, and a section
    with `text` and the figures figures_of(records by name, figures dir) draws."""
    records = {name: repro.sweep(name, config) for name, config in configs_of(repro.profile).items()}
    repro.report.add(claims_of(records, repro.profile))
    images = "\n\n".join(f"![{p.stem}]({p.relative_to(repro.out)})" for p in figures_of(records, repro.report.figures))
    repro.report.section(title, repro.timing.so_far(), text + "\n\n" + images)


@section("scaling", configs=configs)
def run(repro) -> None:
    run_sweeps_section(repro, configs, claims, figures, "Scaling: where the open claims of exp 2 and exp 3 emerge",
                       "Each point is one sweep on a base pretrained that many steps (mean over seeds, 95 % "
                       "interval as a band); the stars are the reference's own results, with its larger models "
                       "and its pretraining.")
