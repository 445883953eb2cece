#!/usr/bin/env python
"""Reproduce both papers: every section's sweeps, figures and verdicts, in one report.

  python scripts/reproduce.py --profile quick --out runs/repro-quick     # 2-core CPU: 37.4 min measured
  python scripts/reproduce.py --profile paper --out runs/repro-paper     # the papers' sizes: GPU or TPU
  python scripts/reproduce.py --profile quick --sections exp1,theory     # a part

Each section runs scripts/sweep.py into <out>/<section>/ (pretrained bases come from the shared cache, and an
interrupted reproduction continues where it stopped when run again with the same --out), then measures what the
paper plots. <out>/report.md has, per section, the wall time, every number as mean [95 % interval] over the seeds
next to the reference value, a verdict per claim, and the figures in <out>/figures/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from prefixlab.results import mean_std_ci, read_jsonl  # noqa: E402

MIX = "sort_asc,sort_desc,add1,add2"
EXT_PRE = "sort_asc,sort_desc,add1,modulo,less_than,divisible,inverse_binary"
EXT_EVAL = "add1+add1,more_equal,not_divisible,double_hist,filter_count,sort_asc+add1,less_than+add1"
EXT_PRE_HALF = ",".join(EXT_PRE.split(",")[::2])  # every other pretraining task: the quick profile tunes these

# Per section (model, pretraining steps, tuning steps). `paper` follows the papers (Petrov et al. Table/appendix);
# `quick` uses the narrower small-exp2/small-exp3 models for a 2-core CPU, tunes exp 1 only on sort_desc (the task its
# claims are about), exp 2 only the prefix that starts as the soft prompt (`exp2_inits`) and the exp 3 soft prompts
# only on the two sort tasks (`exp3_soft_tasks`, where soft prompt and prefix differ) and the extended prefixes on every
# evaluation task but only every other pretraining task (`ext_tune_tasks`); `tiny` only exercises the code.
ALL = None  # every task of the section
PROFILES = {
    "paper": dict(seeds=3, eval=3200, exp1=("paper-exp1", 20000, 10000), exp2=("paper-exp2", 20000, 30000),
                  exp3=("paper-exp3", 40000, 20000), ext=("paper-exp3", 40000, 20000),
                  exp1_tune_tasks=ALL, exp2_inits=["normal", "sample_vocab"], exp3_soft_tasks=ALL, ext_tune_tasks=ALL,
                  theory=["all"]),
    "quick": dict(seeds=3, eval=800, exp1=("paper-exp1", 10000, 1500), exp2=("small-exp2", 8000, 800),
                  exp3=("small-exp3", 6000, 800), ext=("small-exp3", 4000, 500),
                  exp1_tune_tasks="sort_desc", exp2_inits=["sample_vocab"], exp3_soft_tasks="sort_asc,sort_desc",
                  ext_tune_tasks=EXT_PRE_HALF + "," + EXT_EVAL, theory=["all"]),
    "tiny": dict(seeds=2, eval=40, exp1=("tiny", 40, 10), exp2=("tiny", 40, 10), exp3=("tiny", 40, 10),
                 ext=("tiny", 40, 10), exp1_tune_tasks="sort_desc", exp2_inits=["normal", "sample_vocab"],
                 exp3_soft_tasks="sort_asc,sort_desc", ext_tune_tasks="sort_asc,add1+add1", theory=["identities"]),
}
SECTIONS = ["exp1", "exp2", "exp3", "exp4", "extended", "spread", "theory"]


class Report:
    """Markdown sections, the claims table and the figures of one reproduction."""

    def __init__(self, out: Path, profile: str):
        self.out, self.profile = out, profile
        self.figures = out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []
        self.claims: list[tuple] = []

    def section(self, title: str, wall_s: float, body: str):
        self.parts.append(f"## {title}\n\nWall time: {wall_s / 60:.1f} min.\n\n{body}\n")

    def claim(self, claim: str, measured: str, reference: str, holds: bool | None):
        """holds=None: a measurement shown beside its reference without a pass/fail criterion."""
        verdict = "reproduced" if holds else ("not reproduced" if holds is not None else "(for comparison)")
        cell = lambda text: text.replace("|", "\\|")  # a "|" in a cell would end it in the markdown table
        self.claims.append((cell(claim), cell(measured), cell(reference), verdict))

    def write(self, total_s: float):
        lines = [f"# Reproduction report (profile `{self.profile}`)", "",
                 f"`python scripts/reproduce.py --profile {self.profile} --out {self.out}` — "
                 f"{total_s / 60:.1f} min in all on {platform.machine()} with {os.cpu_count()} cores. "
                 "Numbers: mean over seeds [95 % t-interval].", "",
                 "## Claims", "", "| claim | measured | reference | verdict |", "|---|---|---|---|"]
        lines += [f"| {c} | {m} | {r} | {v} |" for c, m, r, v in self.claims]
        (self.out / "report.md").write_text("\n".join(lines) + "\n\n" + "\n".join(self.parts))


class SectionTiming:
    """Wall seconds per section, kept in <out>/timing.json and added up over runs, so a reproduction that was
    interrupted and resumed reports the time its sections really took (less the interrupted run's partial work)."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    @contextlib.contextmanager
    def measure(self, name: str):
        self.current, self.t0 = name, time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.so_far()
            self.path.write_text(json.dumps(self.seconds, indent=1) + "\n")

    def so_far(self) -> float:
        """The running section's wall time so far, including earlier runs of it into the same --out."""
        return self.seconds.get(self.current, 0.0) + time.perf_counter() - self.t0


def sweep(out: Path, cache: Path | None, *flags: str) -> list[dict]:
    """Runs scripts/sweep.py into `out` (resuming it when it exists) and returns its records."""
    args = [sys.executable, str(ROOT / "scripts" / "sweep.py"), *flags, "--out", str(out), "--quiet"]
    if cache is not None:
        args += ["--cache-dir", str(cache)]
    if (out / "config.json").exists():
        args.append("--resume")
    print("  $", " ".join(args[1:]), flush=True)
    r = subprocess.run(args, text=True, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"reproduce.py: error: sweep into {out} failed:\n{r.stderr.strip()[-2000:]}")
    return read_jsonl(out / "results.jsonl")


def pct(values) -> str:
    m, _, half = mean_std_ci(list(values))
    if m is None:
        return "n/a"
    if half is None or np.isnan(half):
        return f"{100 * m:.1f} %"
    return f"{100 * m:.1f} % [{100 * max(m - half, 0):.1f}, {100 * min(m + half, 1):.1f}]"


def matching(records, **match) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


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


def hierarchy_claim(rep: Report, title: str, records, chain: list[tuple[str, dict]], tasks, note: str = ""):
    """One claim for a chain of methods a ⊂ b ⊂ ...: every paired gap's 95 % interval reaches 0 or above."""
    gaps = [(lo, hi, *paired_gap(records, mhi, mlo, tasks)) for (lo, mlo), (hi, mhi) in zip(chain, chain[1:])]
    means = ", ".join(f"{name} {100 * mean([mean(em(records, task=t, **m)) for t in tasks]):.1f} %" for name, m in chain)
    text = "; ".join(f"{hi} − {lo} = {100 * g:+.1f} pp [±{100 * h:.1f}]" for lo, hi, g, h in gaps)
    rep.claim(title, f"{means}; paired gaps {text}{note}", " ⊂ ".join(name for name, _ in chain),
              all(g + (0 if np.isnan(h) else h) >= 0 for _, _, g, h in gaps))


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


# --- sections ---------------------------------------------------------------------------------------------------

def exp1(rep: Report, prof: dict, a) -> None:
    model, pre, tune = prof["exp1"]
    out = a.out / "exp1"
    tasks = "sort_asc,sort_desc"
    recs = sweep(out, a.cache_dir, "--model", model, "--pretrain", "sort_asc", "--tasks", tasks,
                 "--tune-tasks", prof["exp1_tune_tasks"] or tasks, "--methods", "none,prefix,soft_prompt,lora,full",
                 "--pretrain-steps", str(pre), "--tune-steps", str(tune), "--seeds", str(prof["seeds"]),
                 "--eval-samples", str(prof["eval"]), "--no-cross-eval")
    base = em(recs, task="sort_asc", method="none")
    rep.claim("exp1: pretrained on sort_asc", pct(base), "91.4 %", mean(base) >= 0.9)
    for method, ref, ok in (("prefix", "0.0 %", lambda m: m <= 0.05), ("soft_prompt", "(prefix ⊃ soft prompt)", lambda m: m <= 0.05),
                            ("lora", "LoRA can (exp4: 92.4 %)", lambda m: m >= 0.8), ("full", "84.9 %", lambda m: m >= 0.8)):
        xs = em(recs, task="sort_desc", method=method)
        rep.claim(f"exp1: {method} tuned to sort_desc", pct(xs), ref, ok(mean(xs)))
    fig = _attention_figure(out, rep.figures / "exp1_attention.png")
    rep.section("Experiment 1: sort ascending → sort descending", a.timing.so_far(),
                _table(recs) + f"\n\n![attention maps]({fig.relative_to(a.out)})\n\nAttention of the pretrained, "
                "fully fine-tuned and prefix-tuned (P = 1) models on one sort_desc input (seed 0, content rows; the "
                "prefix model's first column is the prefix slot). Fine-tuning changes the pattern; the prefix can "
                "only take attention away from the content, uniformly per row.")


def _attention_figure(out: Path, path: Path) -> Path:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab import tasks as T
    from prefixlab.analysis import attention_maps, load_run

    run = load_run(out)
    batch = T.parse_mixture("sort_desc").batch(jax.random.key(7), 1, test=True)
    tokens = batch.tokens_BT
    panels = [("pretrained (sort_asc)", run.base_model(0), None),
              ("full fine-tuning → sort_desc", *run.model("sort_desc", "full", 0)),
              ("prefix P=1 → sort_desc", *run.model("sort_desc", "prefix", 0, context_len=1))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (title, model, ctx) in zip(axes, panels):
        probs = attention_maps(model, tokens, ctx)[0][0, 0]
        P = 0 if ctx is None else ctx.length
        ax.imshow(probs[P:, :], cmap="viridis", vmin=0, vmax=1)
        ax.set(title=title, xlabel="key position" + (" (col 0 = prefix)" if P else ""), ylabel="query position")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# exp2's prefix inits: the reference's N(0, 1) and the base's own activations (= the soft prompt at init)
PREFIX_TAGS = {"normal": "prefix", "sample_vocab": "prefix-sample_vocab"}  # init -> group tag in the run dir


def exp2(rep: Report, prof: dict, a) -> None:
    model, pre, tune = prof["exp2"]
    inits = prof["exp2_inits"]
    out = a.out / "exp2"
    recs = sweep(out, a.cache_dir, "--model", model, "--pretrain", MIX, "--tasks", MIX,
                 "--methods", "none,prompt,soft_prompt,prefix", "--prefix-lengths", "1", "--tune-lr", "prefix=5e-3",
                 "--prefix-init", ",".join(inits), "--pretrain-steps", str(pre), "--tune-steps", str(tune),
                 "--seeds", str(prof["seeds"]), "--eval-samples", str(prof["eval"]))
    tasks = MIX.split(",")
    refs = {"sort_asc": "94.1 %", "sort_desc": "83.7 %", "add1": "99.6 %", "add2": "99.8 %"}
    base_refs = {"sort_asc": "≈ 31 %", "sort_desc": "≈ 19 %", "add1": "≈ 30 %", "add2": "≈ 16 %"}
    matrices = []
    for init in inits:
        rows = [f"Prefix init `{init}`:", "", "| prefix tuned on | " + " | ".join(tasks) + " |",
                "|---" * (len(tasks) + 1) + "|"]
        for t in tasks:
            own = em(recs, task=t, method="prefix", init=init)
            others = [x for o in tasks if o != t for x in cross(recs, t, o, method="prefix", init=init)]
            rep.claim(f"exp2: prefix P=1 (init {init}) for {t}: own task / the other three",
                      f"{pct(own)} / max {100 * max(others):.1f} %", f"{refs[t]} / ≈ 0 %",
                      mean(own) >= 0.8 and max(others) <= 0.05)
            rows.append(f"| {t} | " + " | ".join(
                pct(own) if o == t else pct(cross(recs, t, o, method="prefix", init=init)) for o in tasks) + " |")
        matrices.append("\n".join(rows))
    for t in tasks:
        rep.claim(f"exp2: mixture base, no prefix, on {t}", pct(em(recs, task=t, method="none")), base_refs[t], None)
    hierarchy_claim(rep, "hierarchy on the mixture, 1 layer, P = 1: hard prompt ⊂ soft prompt ⊂ prefix (the prefix "
                    "that starts as the soft prompt)", recs,
                    [("prompt", dict(method="prompt")), ("soft prompt", dict(method="soft_prompt")),
                     ("prefix", dict(method="prefix", init="sample_vocab"))], tasks,
                    note=" (in a one-layer model a prefix and a soft prompt are the same parameterisation)")
    shift, fig = _exp2_figures(out, tasks, inits, rep.figures)
    rep.claim("exp2: content attention, prefix columns removed and renormalised, equals no-prefix attention",
              f"max |Δ| = {shift.max_abs:.1e} over {shift.rows:,} query rows ({len(inits)} init(s) × 4 prefixes × {prof['seeds']} seeds "
              f"× 64 inputs × heads × positions; {shift.skipped:,} rows skipped: the prefix took all their attention)",
              "identical", shift.max_abs <= 1e-5)
    rep.section("Experiment 2: one prefix per task on a mixture-pretrained model", a.timing.so_far(),
                _table(recs) + "\n\nExact match of each task's prefix on every task (mean [95 % interval]):\n\n"
                + "\n\n".join(matrices) + f"\n\n![Figure 3]({fig.relative_to(a.out)})\n\nAttention-block output at "
                "the last input position for 20 inputs (PCA of all points), without a prefix and with each task's "
                "prefix (init sample_vocab): each prefix moves the points towards its own cluster (seed 0).")


def _exp2_figures(out: Path, tasks, inits, figures: Path):
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab import tasks as T
    from prefixlab.analysis import AttentionShift, attention_block_outputs, content_attention_shift, load_run

    run = load_run(out)
    tokens = T.parse_mixture(MIX).batch(jax.random.key(3), 64, test=True).tokens_BT
    shifts = []
    for s in run.seeds:
        ctxs = [run.model(t, PREFIX_TAGS[i], s, context_len=1)[1] for t in tasks for i in inits]
        shifts.append(content_attention_shift(run.base_model(s), tokens, ctxs))
    shift = AttentionShift(max(x.max_abs for x in shifts), sum(x.rows for x in shifts), sum(x.skipped for x in shifts))
    points = {"no prefix": attention_block_outputs(run.base_model(0), tokens[:20], None, 9)}
    for t in tasks:
        model, ctx = run.model(t, PREFIX_TAGS["sample_vocab"], 0, context_len=1)
        points[t] = attention_block_outputs(model, tokens[:20], ctx, 9)
    allp = np.concatenate(list(points.values()))
    mu = allp.mean(0)
    _, _, vt = np.linalg.svd(allp - mu, full_matrices=False)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, p in points.items():
        xy = (p - mu) @ vt[:2].T
        ax.scatter(xy[:, 0], xy[:, 1], s=14, label=name, marker="x" if name == "no prefix" else "o")
    ax.set(title="attention-block output, last input position", xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = figures / "exp2_block_outputs.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return shift, path


def exp3(rep: Report, prof: dict, a) -> None:
    model, pre, tune = prof["exp3"]
    out = a.out / "exp3"
    tasks = MIX + ",sort_asc+add1,double_hist"
    common = ["--model", model, "--pretrain", MIX, "--tasks", tasks, "--prefix-lengths", "10", "--tune-lr",
              "prefix=5e-3", "--pretrain-steps", str(pre), "--tune-steps", str(tune), "--seeds", str(prof["seeds"]),
              "--eval-samples", str(prof["eval"]), "--no-cross-eval"]
    recs = sweep(out, a.cache_dir, *common, "--methods", "none,prefix")
    # the soft prompts in a run directory of their own (same cached base), on the tasks the profile names
    soft_tasks = (prof["exp3_soft_tasks"] or tasks).split(",")
    recs += sweep(a.out / "exp3-soft", a.cache_dir, *common, "--methods", "soft_prompt", "--tune-tasks",
                  ",".join(soft_tasks))
    pre_tasks = [mean(em(recs, task=t, method="prefix")) for t in MIX.split(",")]
    rep.claim("exp3: P=10 prefixes on the 4 pretraining tasks (worst task)",
              f"{100 * min(pre_tasks):.1f} % (mean per task {', '.join(f'{100 * x:.1f}' for x in pre_tasks)})",
              "≥ 99.6 % each", min(pre_tasks) >= 0.9)
    comp, new = em(recs, task="sort_asc+add1", method="prefix"), em(recs, task="double_hist", method="prefix")
    rep.claim("exp3: composite sort_asc+add1 (pretrained skills combined) vs new double_hist",
              f"{pct(comp)} vs {pct(new)}", "71.6 % vs 0.6 %", mean(comp) > mean(new) + 0.1 and mean(new) <= 0.05)
    hierarchy_claim(rep, f"hierarchy, 4 layers, P = 10: soft prompt ⊂ prefix (on {', '.join(soft_tasks)})", recs,
                    [("soft prompt", dict(method="soft_prompt")), ("prefix", dict(method="prefix"))], soft_tasks)
    rep.section("Experiment 3: pretrained skills, their composition, and a new task", a.timing.so_far(),
                _table(recs))


def exp4(rep: Report, prof: dict, a) -> None:
    model, pre, tune = prof["exp3"]
    out = a.out / "exp4"
    recs = sweep(out, a.cache_dir, "--model", model, "--pretrain", MIX, "--tasks", "double_hist", "--methods",
                 "prefix", "--prefix-lengths", "12", "--match-params", "--lora-alpha", "1", "--tune-lr",
                 "prefix=5e-3,lora=5e-3", "--pretrain-steps", str(pre), "--tune-steps", str(tune),
                 "--seeds", str(prof["seeds"]), "--eval-samples", str(prof["eval"]), "--no-cross-eval")
    prefix, lora = em(recs, method="prefix"), em(recs, method="lora")
    n_p = next(r["trainable_params"] for r in recs if r["method"] == "prefix")
    n_l = next(r["trainable_params"] for r in recs if r["method"] == "lora")
    rep.claim(f"exp4: double_hist, prefix P=12 ({n_p:,} params) vs LoRA o,fc,proj ({n_l:,} params)",
              f"{pct(prefix)} vs {pct(lora)}", "0.3 % vs 92.4 %", mean(lora) > mean(prefix) + 0.2)
    rep.section("Experiment 4: prefix vs LoRA at an equal parameter count", a.timing.so_far(),
                _table(recs))


def extended(rep: Report, prof: dict, a) -> None:
    model, pre, tune = prof["ext"]
    out = a.out / "extended"
    tuned = (prof["ext_tune_tasks"] or f"{EXT_PRE},{EXT_EVAL}").split(",")
    recs = sweep(out, a.cache_dir, "--model", model, "--pretrain", EXT_PRE, "--tasks", f"{EXT_PRE},{EXT_EVAL}",
                 "--tune-tasks", ",".join(tuned), "--methods", "none,prefix", "--prefix-lengths", "10", "--tune-lr",
                 "prefix=5e-3", "--pretrain-steps", str(pre), "--tune-steps", str(tune), "--seeds", str(prof["seeds"]),
                 "--eval-samples", str(prof["eval"]), "--no-cross-eval", "--variant", "extended")
    on_pre = [t for t in EXT_PRE.split(",") if t in tuned]
    on_eval = [t for t in EXT_EVAL.split(",") if t in tuned]
    acc_pre = mean([mean(em(recs, task=t, method="prefix")) for t in on_pre])
    acc_eval = mean([mean(em(recs, task=t, method="prefix")) for t in on_eval])
    rep.claim(f"extended: P=10 prefixes, pretraining set ({len(on_pre)} of 7 tasks) vs evaluation set "
              f"({len(on_eval)} of 7) (mean over tasks)", f"{100 * acc_pre:.1f} % vs {100 * acc_eval:.1f} %",
              "high on pretrained skills, low on new ones", acc_pre > acc_eval)
    rep.section("Extended tasks", a.timing.so_far(), f"Prefixes tuned on: {', '.join(tuned)} (the base is scored on "
                "all 14 tasks).\n\n" + _table(recs))


def spread(rep: Report, prof: dict, a) -> None:
    """Appendix B: how much the last input position's attention over P=10 prefix slots varies across inputs."""
    import jax

    from prefixlab import tasks as T
    from prefixlab.analysis import load_run, prefix_attention_spread

    out = a.out / "exp3"
    if not (out / "results.jsonl").exists():
        exp3(rep, prof, a)
    run = load_run(out)
    tokens = T.parse_mixture("sort_asc").batch(jax.random.key(11), 256, test=True).tokens_BT
    gaps = []  # seeds x layers, mean over heads
    for s in run.seeds:
        model, ctx = run.model("sort_asc", "prefix", s, context_len=10)
        gaps.append(prefix_attention_spread(model, tokens, ctx, query=9).mean(axis=-1))
    gaps = np.array(gaps)
    text = ", ".join(f"layer {l}: {g:.3f}" for l, g in enumerate(gaps.mean(0)))
    rep.claim("Appendix B: renormalised attention on P=10 prefix slots, 1st–99th percentile gap across inputs",
              text, "0.02–0.17 per layer (GPT-2)", bool(gaps.max() < 0.5))
    rep.section("Prefix-attention spread across inputs (Appendix B)", a.timing.so_far(),
                f"Per layer, mean over seeds, heads and slots of the 1st–99th percentile gap over 256 sort_asc "
                f"inputs of the last input position's renormalised attention over the 10 prefix slots: {text}.")


def start_theory(prof: dict, a) -> dict:
    """Starts the theory checks that have no result yet, in the background at a lower priority, so they overlap the
    sweeps instead of adding ~6 min at the end (nice 10 still lets them take much of a core: the quick profile's
    first sections ran slower while they did). Returns {part: Popen}."""
    procs = {}
    for part in prof["theory"]:
        path = a.out / f"theory-{part}.json"
        if path.exists():
            continue
        cmd = [sys.executable, str(ROOT / "scripts" / "theory.py"), part, "--out", str(path)]
        if part == "identities":
            cmd += ["--model-dir", "tiny"]
        print("  $", " ".join(cmd[1:]), "(in the background)", flush=True)
        with (a.out / f"theory-{part}.log").open("w") as log:  # the child keeps its own copy of the file
            procs[part] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                           preexec_fn=(lambda: os.nice(10)) if hasattr(os, "nice") else None)
    return procs


def theory(rep: Report, prof: dict, a) -> None:
    rows, walls = [], []
    procs = getattr(a, "theory_procs", None) or start_theory(prof, a)
    for part in prof["theory"]:
        path = a.out / f"theory-{part}.json"
        if part in procs and procs[part].wait() not in (0, 1):  # 1: ran, and some check failed
            log = (a.out / f"theory-{part}.log").read_text()
            raise SystemExit(f"reproduce.py: error: theory {part} failed:\n{log.strip()[-2000:]}")
        data = json.loads(path.read_text())
        rows += data["rows"]
        walls.append(data["wall_s"])
    held = sum(r["holds"] for r in rows)
    rep.claim("theory: identities, constructions (Thm 1, 2), capacity, Wang's limitation",
              f"{held} of {len(rows)} checks hold", "all hold", held == len(rows))
    wang = [r for r in rows if "wang" in r["claim"].lower()]
    if wang:
        rep.claim("Wang: a single layer has datasets no prompt can memorise", f"{sum(r['holds'] for r in wang)} of "
                  f"{len(wang)} Wang checks hold", "no prompt of any length fits; LoRA/full do", all(r["holds"] for r in wang))
    table = ["| claim | sizes | measured | threshold | holds |", "|---|---|---|---|---|"]
    table += [f"| {r['claim']} | {r['sizes']} | {r['measured'] if not isinstance(r['measured'], float) else format(r['measured'], '.3g')} "
              f"| {r['threshold']} | {'yes' if r['holds'] else 'NO'} |" for r in rows]
    rep.section("Theory verification", sum(walls), "Run in the background beside the sections before it (at a lower "
                "priority), so its wall time overlaps theirs.\n\n" + "\n".join(table))


def _table(recs) -> str:
    from prefixlab.report import summary_markdown

    return summary_markdown(recs).split("\n", 4)[4]


RUNNERS = {"exp1": exp1, "exp2": exp2, "exp3": exp3, "exp4": exp4, "extended": extended, "spread": spread,
           "theory": theory}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="reproduce.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=list(PROFILES), default="quick", help="sizes and steps (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory (re-running with the same --out resumes)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list (default: all): " + ", ".join(SECTIONS))
    p.add_argument("--cache-dir", default=None, help="pretrained-base cache (default: that of sweep.py)")
    a = p.parse_args(argv)
    sections = [s.strip() for s in a.sections.split(",")]
    bad = [s for s in sections if s not in RUNNERS]
    if bad:
        p.exit(2, f"reproduce.py: error: unknown section(s) {bad}; valid: {', '.join(SECTIONS)}\n")
    a.out = Path(a.out)
    a.cache_dir = Path(a.cache_dir) if a.cache_dir else None
    rep = Report(a.out, a.profile)
    a.timing = timing = SectionTiming(a.out / "timing.json")
    start = time.perf_counter()
    a.theory_procs = start_theory(PROFILES[a.profile], a) if "theory" in sections else {}
    for name in sections:
        print(f"[{name}] {time.perf_counter() - start:6.0f} s", flush=True)
        with timing.measure(name):
            RUNNERS[name](rep, PROFILES[a.profile], a)
        rep.write(sum(timing.seconds.values()))  # a partial report after every section
    print(f"report: {a.out / 'report.md'} ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
