"""What weight methods break (issue 35, item 3): a base pretrained on a task mixture is tuned on one of its tasks by
full fine-tuning, LoRA (ranks, scalings), a prefix and a soft prompt; each tuned model's weights are compared with
the base's (intruder dimensions, Shuttleworth et al. 2025; prefixlab/weight_spectrum.py) and scored on the base's
other pretraining tasks (forgetting, Biderman et al. 2024), context methods with and without their context.

Sweeps: `forgetting` (every method), `forgetting-peft` and `forgetting-rslora` (LoRA under PEFT's alpha/r and
rsLoRA's alpha/sqrt(r)), `forgetting-lora-lr` (LoRA at full fine-tuning's learning rate) and
`forgetting-early` (full and LoRA stopped at a fixed early step: the step axis, since a run directory keeps only
its final parameters). They share one base (seed 0, as the reference pretrained); the seeds vary the tuning runs.
The weight and forgetting measures are computed post hoc from the run directories' checkpoints
(`prefixlab.forgetting.forgetting(run_dir, spectrum=True)`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from prefixlab.claim import Claim
from prefixlab.experiments.claims import mean, protocol
from prefixlab.experiments.profiles import MIX
from prefixlab.experiments.sections import section
from prefixlab.methods import METHODS
from prefixlab.results import mean_std_ci
from prefixlab.sweep import SweepConfig
from prefixlab.sweep_report import save_figure

TITLE = "Weight diagnostics: intruder dimensions and forgetting"
# forgetting by: exact match (the final evaluation's) and the continuation accuracy (prefixlab/forgetting.py)
MEASURES = {"forgetting": "exact match", "forgetting_continuation": "continuation accuracy"}
TUNE_TASK = "sort_desc"  # a pretraining task: context methods can select it (exp 2), weight methods can learn it
RANKS = (1, 4, 16)
SCALINGS = ("peft", "rslora")  # beside the default "constant" (alpha at every rank)
SCALING_RANKS = (16,)  # at rank 1 every scaling is the same; rank 16 is where they differ most
# per profile: (model, pretraining steps, tuning budget, early step, seeds, test samples); other profiles: quick's
SIZES = {"tiny": ("tiny", 40, 10, 5, 2, 40), "quick": ("small-exp2", 8000, 1000, 200, 3, 800),
         "paper": ("paper-exp2", 20000, 3000, 500, 3, 3200)}


def sizes(profile: str) -> tuple:
    return SIZES.get(profile, SIZES["quick"])


def configs(profile: str) -> dict[str, SweepConfig]:
    model, pre, tune, early, seeds, n_eval = sizes(profile)
    main = SweepConfig(model=model, pretrain=MIX, tasks=MIX, tune_tasks=(TUNE_TASK,),
                       methods=("none", "full", "lora", "prefix", "soft_prompt"), prefix_lengths=(1,),
                       settings={"lora": {"rank": RANKS}}, pretrain_steps=pre, tune_steps=tune, seeds=seeds,
                       eval_samples=n_eval, lr_grid=(1.0,), shared_base=True)
    out = {"forgetting": main}
    for scaling in SCALINGS:  # one sweep each: a group's tag does not name its scaling
        out[f"forgetting-{scaling}"] = dataclasses.replace(
            main, methods=("lora",), settings={"lora": {"rank": SCALING_RANKS, "scaling": (scaling,)}})
    # LoRA at full fine-tuning's rate: Biderman et al. compare at matched learning, not at each method's default
    out["forgetting-lora-lr"] = dataclasses.replace(main, methods=("lora",),
                                                    tune_lr={"lora": (METHODS["full"].default_lr,)})
    out["forgetting-early"] = dataclasses.replace(main, methods=("full", "lora"), tune_steps=early, stopping=False,
                                                  chunk=min(early, 250))
    return out


# -- the rows: one per selected tuned run of a sweep (prefixlab/forgetting.py, with the weight diagnostics) -----------

def kind(row: dict) -> str:
    """The row's arm: "full", "LoRA r<rank> <scaling>", or the context method's name; " lr <rate>" added where the
    run's rate is not its method's default."""
    name = (f"LoRA r{row['lora_rank']} {row.get('lora_scaling', 'constant')}" if row["method"] == "lora"
            else row["method"])
    default = getattr(METHODS.get(row["method"]), "default_lr", None)
    return name if not row.get("lr") or row["lr"] == default else f"{name} lr {row['lr']:g}"


def final(rows) -> list[dict]:
    """The rows of runs tuned to their stop (every sweep but the early-step one)."""
    return [r for r in rows if r.get("sweep") != "forgetting-early"]


def _ci(xs) -> tuple[float, float]:
    m, _, half = mean_std_ci(list(xs))
    return (math.nan, math.nan) if m is None else (m, 0.0 if half is None or math.isnan(half) else half)


def _fmt(xs, scale: float = 100.0, unit: str = " %") -> str:
    m, h = _ci(xs)
    return "n/a" if math.isnan(m) else f"{scale * m:.1f}{unit} [±{scale * h:.1f}]"


def _paired(rows, a: str, b: str, key: str) -> list[float]:
    """a − b of `key`, paired by seed (the runs of a pair share their base)."""
    by = lambda k: {r["seed"]: r[key] for r in final(rows) if kind(r) == k and r[key] is not None}
    x, y = by(a), by(b)
    return [x[s] - y[s] for s in sorted(x.keys() & y.keys())]


def _side(xs) -> int:
    """+1 / -1 when the 95 % interval of the mean lies above / below 0, else 0."""
    m, h = _ci(xs)
    return 0 if math.isnan(m) or abs(m) <= h else (1 if m > 0 else -1)


def pearson(xs, ys) -> tuple[float, float, float]:
    """Pearson r with its 95 % interval (Fisher z); nan where undefined (fewer than 4 points or no spread)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 4 or np.ptp(x) <= 1e-9 or np.ptp(y) <= 1e-9:  # equal floats can still leave a std of ~1e-17
        return math.nan, math.nan, math.nan
    r = float(np.corrcoef(x, y)[0, 1])
    z, se = math.atanh(max(min(r, 0.999999), -0.999999)), 1 / math.sqrt(len(x) - 3)
    return r, math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)


def claims(rows, profile: str) -> list[Claim]:
    """The four predictions, each a pure function of the diagnostic rows."""
    how = protocol(configs(profile)["forgetting"], final(rows)) + "; one base (seed 0) shared by the seeds"
    rows = [r for r in rows if r.get("exact_match") is not None]
    loras = sorted({kind(r) for r in final(rows) if r["method"] == "lora"},
                   key=lambda k: (int(k.split()[1][1:]), k))
    intr = lambda k: [r["intruders"] for r in final(rows) if kind(r) == k]
    out = []
    for rate, arms in _by_rate(loras).items():  # (i) Shuttleworth: intruders under LoRA, none under full
        full_i, lora_i = intr("full"), [x for k in arms for x in intr(k)]
        text = (f"full {_fmt(full_i, 1, '')}; " + "; ".join(f"{k} {_fmt(intr(k), 1, '')}" for k in arms)
                + f"; runs with ≥ 1: LoRA {sum(x > 0 for x in lora_i)} of {len(lora_i)}, full "
                  f"{sum(x > 0 for x in full_i)} of {len(full_i)}")
        holds = None if not full_i or not lora_i else (mean(full_i) < 0.5 and mean(lora_i) - mean(full_i) >= 1
                                                       and min(mean(intr(k)) for k in arms) > mean(full_i))
        out.append(Claim(f"weights: LoRA ({rate}) adds intruder dimensions, full fine-tuning does not (intruders per "
                         "model: top-10 singular vectors of q,k,v,o,fc,proj with max |cos| < 0.5 to the base's)", text,
                         "LoRA > 0, full ≈ 0 (Shuttleworth et al. 2025)", holds, how))
    for key, what in MEASURES.items():
        out.append(_intruders_forget(rows, key, what, how))
    # (iii) a context method forgets nothing once its context is removed (the control)
    ctx_rows = [r for r in rows if r.get("without_context") is not None]
    gap = max((abs(r["without_context"][t] - r["base"][t]) for r in ctx_rows for t in r["base"]), default=math.nan)
    with_ctx = [r["forgetting"] for r in ctx_rows if r["forgetting"] is not None]
    out.append(Claim("weights: prefix and soft prompt forget nothing with the context removed",
                     f"max |without context − base| = {100 * gap:.1f} pp over {len(ctx_rows)} runs × "
                     f"{len(ctx_rows[0]['base']) if ctx_rows else 0} tasks (with the context: forgetting "
                     f"{_fmt(with_ctx)})", "0 (by construction)", None if math.isnan(gap) else gap == 0, how))
    for rate, arms in _by_rate(loras).items():
        for key, what in MEASURES.items():
            out.append(_biderman(rows, arms, key, f"{what}; LoRA {rate}", how))
    return out


def _by_rate(arms) -> dict[str, list[str]]:
    """The LoRA arms by learning rate: {"at its default rate": [...], "at lr 0.0005": [...]}; a claim per rate, since
    intruders and forgetting follow the update's size."""
    out: dict[str, list[str]] = {}
    for k in arms:
        out.setdefault(f"at {k.split(' lr ', 1)[1].join(('lr ', ''))}" if " lr " in k else "at its default rate",
                       []).append(k)
    return out


def _intruders_forget(rows, key: str, what: str, how: str) -> Claim:
    """(ii) across the LoRA runs (every rank and scaling): Pearson r of intruders vs forgetting by `key`."""
    lr_rows = [r for r in final(rows) if r["method"] == "lora" and r.get(key) is not None]
    r, lo, hi = pearson([x["intruders"] for x in lr_rows], [x[key] for x in lr_rows])
    verdict = None if math.isnan(r) else (True if lo > 0 else False if hi < 0 or r <= 0 else None)
    spread = f"{len(lr_rows)} runs, forgetting {min((x[key] for x in lr_rows), default=0):.3f}–" \
             f"{max((x[key] for x in lr_rows), default=0):.3f}"
    return Claim(f"weights: LoRA runs with more intruder dimensions forget more ({what}; Pearson r over the LoRA "
                 "runs)", f"n/a: no spread ({spread})" if math.isnan(r) else
                 f"r = {r:+.2f} [{lo:+.2f}, {hi:+.2f}] ({spread})", "r > 0 (Shuttleworth et al. 2025)", verdict, how)


def _biderman(rows, loras, key: str, what: str, how: str) -> Claim:
    """(iv) each LoRA arm vs full fine-tuning, paired by seed: learns less and forgets less (by `key`)."""
    parts, sides = [], []
    for k in loras:
        learn, forget = _paired(rows, k, "full", "exact_match"), _paired(rows, k, "full", key)
        parts.append(f"{k}: learns {_fmt(learn, 100, ' pp')}, forgets {_fmt(forget, 100, ' pp')}")
        sides.append((_side(learn), _side(forget)))
    verdict = (None if not sides else True if all(sd == (-1, -1) for sd in sides)
               else False if any(l > 0 or f > 0 for l, f in sides) else None)
    return Claim(f"weights: LoRA learns less and forgets less than full fine-tuning ({what}; LoRA − full, paired by "
                 "seed)", "; ".join(parts) or "n/a", "both < 0 (Biderman et al. 2024)", verdict, how)


def summary(rows) -> list[dict]:
    """Per sweep and arm: mean [95 % half-width] of learning, retained, forgetting, intruders and dW's rank."""
    out = []
    for sweep in dict.fromkeys(r["sweep"] for r in rows):
        for k in dict.fromkeys(kind(r) for r in rows if r["sweep"] == sweep):
            rs = [r for r in rows if r["sweep"] == sweep and kind(r) == k and r["exact_match"] is not None]
            col = lambda key: [r[key] for r in rs if r.get(key) is not None]
            out.append({"sweep": sweep, "arm": k, "seeds": len(rs), "steps": col("steps_used"),
                        **{key: _ci(col(key)) for key in ("exact_match", "retained", "forgetting", "intruders",
                                                          "delta_rank", "retained_continuation",
                                                          "forgetting_continuation")},
                        "without_context": _ci([_other_mean(r, "without_context") for r in rs
                                                if r.get("without_context") is not None])})
    return out


def _other_mean(row, key):
    return float(np.mean([row[key][t] for t in row["other_tasks"]]))


def table(rows) -> str:
    """The summary as markdown: one line per sweep and arm."""
    lines = ["| sweep | arm | seeds | steps used | learning (exact match, tuned task) | retained (exact match, other "
             "tasks) | retained (continuation, other tasks) | forgetting (continuation) | intruders | rank₉₀ ΔW (max "
             "over weights) | retained (exact match), context removed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    pc = lambda mh: "—" if math.isnan(mh[0]) else f"{100 * mh[0]:.1f} % [±{100 * mh[1]:.1f}]"
    n = lambda mh: "—" if math.isnan(mh[0]) else f"{mh[0]:.1f} [±{mh[1]:.1f}]"
    for s in summary(rows):
        steps = f"{min(s['steps'])}–{max(s['steps'])}" if s["steps"] else "—"
        lines.append(f"| {s['sweep']} | {s['arm']} | {s['seeds']} | {steps} | {pc(s['exact_match'])} | "
                     f"{pc(s['retained'])} | {pc(s['retained_continuation'])} | {pc(s['forgetting_continuation'])} | "
                     f"{n(s['intruders'])} | {n(s['delta_rank'])} | "
                     f"{pc(s['without_context'])} |")
    return "\n".join(lines)


def figure(rows, path: Path) -> Path:
    """Left and middle: learning (exact match on the tuned task) vs retained (mean exact match, then mean
    continuation accuracy, on the base's other pretraining tasks), mean ± 95 % interval over seeds per arm; hollow
    markers and an arrow: full and LoRA at the early step, to their final point; the star: the base, which is also
    every context method with its context removed. Right: intruders vs forgetting (continuation) per LoRA / full run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["exact_match"] is not None and r["retained"] is not None]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.4))
    colors = {"full": "k", "prefix": "tab:purple", "soft_prompt": "tab:pink"}
    lora_colors = dict(zip(RANKS, ("tab:orange", "tab:green", "tab:blue")))
    markers = {"constant": "o", "peft": "s", "rslora": "^"}
    color = lambda r: (lora_colors.get(r.get("lora_rank"), "tab:gray") if r["method"] == "lora"
                       else colors.get(r["method"], "tab:gray"))
    marker = lambda r: "P" if kind(r).endswith(f"lr {r['lr']:g}") else markers.get(r.get("lora_scaling"), "D")
    base = [r for r in rows if r["sweep"] == "forgetting"]
    for ax, key, base_key, name in ((axes[0], "retained", "base_retained", "exact match"),
                                    (axes[1], "retained_continuation", "base_retained_continuation",
                                     "continuation accuracy")):
        point = {}
        for s in summary(rows):
            r0 = next(r for r in rows if r["sweep"] == s["sweep"] and kind(r) == s["arm"])
            (x, xh), (y, yh) = s["exact_match"], s[key]
            point[(s["sweep"], s["arm"])] = (x, y)
            early = s["sweep"] == "forgetting-early"
            ax.errorbar(x, y, xerr=xh, yerr=yh, fmt=marker(r0), color=color(r0), mfc="none" if early else color(r0),
                        ms=8, capsize=3, label=None if early else s["arm"])
        for (sweep, arm), (x, y) in point.items():
            if sweep == "forgetting-early" and ("forgetting", arm) in point:
                ax.annotate("", point[("forgetting", arm)], (x, y),
                            arrowprops=dict(arrowstyle="->", color="0.6", lw=0.8))
        if base:
            task = base[0]["task"]
            ax.scatter([np.mean([r["base"][task] for r in base])], [np.mean([r[base_key] for r in base])],
                       marker="*", s=250, color="gold", edgecolor="k", zorder=5,
                       label="base = context methods, context removed")
        ax.set(xlabel="learning: exact match on the tuned task",
               ylabel=f"retained: mean {name} on the other pretraining tasks",
               title=f"learning vs retained ({name}); hollow = early step")
    axes[0].legend(fontsize=7, loc="best")
    bx = axes[2]
    jitter = np.random.default_rng(0)
    for r in rows:
        if r["method"] in ("lora", "full") and r["sweep"] != "forgetting-early":
            bx.scatter(r["intruders"] + jitter.uniform(-0.15, 0.15), r["forgetting_continuation"], color=color(r),
                       marker=marker(r), s=30)
    bx.set(xlabel="intruder dimensions per model (q,k,v,o,fc,proj × top 10; jittered)",
           ylabel="forgetting: base − tuned continuation accuracy", title="intruders vs forgetting, per run "
           "(black: full)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


@section("forgetting", configs=configs)
def run(repro) -> None:
    from prefixlab.checkpoint import write_json_atomic
    from prefixlab.forgetting import forgetting

    rows = []
    for name, config in configs(repro.profile).items():
        repro.sweep(name, config)
        rows += [{"sweep": name, **r} for r in forgetting(repro.out / name, spectrum=True,
                                                          log=repro.log if repro.progress else None)]
    write_json_atomic(repro.out / "weight-diagnostics.json", rows)
    repro.report.add(claims(rows, repro.profile))
    fig = figure(rows, repro.report.figures / "forgetting.png")
    repro.report.section(TITLE, repro.timing.so_far(), table(rows) + f"\n\n![learning vs forgetting]"
                         f"({fig.relative_to(repro.out)})\n\nEvery number is post hoc from the run directories' "
                         "checkpoints (prefixlab/forgetting.py, prefixlab/weight_spectrum.py); the rows are in "
                         "weight-diagnostics.json.")
