"""PrefixMemory-Tuning (issue 35, item 1): what moving the prefix out of the softmax changes.

By Petrov et al.'s identity a prefix cannot change the attention over the content, only rescale it and add a bias
along its values. prefix_memory (prefixlab/methods/prefix_memory.py) adds phi(q)^T M to each head's output instead:
still no change of the attention pattern in the layer it acts on, but a query-dependent bias that takes no attention
mass from the content. Two sweeps separate the halves of Petrov's statement:

- sharp (exp 1's models): a sort_asc base tuned to sort_desc, which needs a new attention pattern (prediction: ~0 %
  for prefix_memory as for prefix; LoRA the control that it can be learned), and an add1 base tuned to add2, whose
  attention (output j reads input j) the base already has, so only the head outputs must change (prediction:
  prefix_memory gains where a prefix has to buy its bias with the content's attention mass).
- dilution (exp 2's mixture base, elicitation): prefix vs prefix_memory at P = 1, 4, 16; the prefix's attention share
  per content position (the content length T a query sees) comes from the tuned runs after the sweep.

Run on its own: python -m prefixlab.experiments.prefix_memory --out DIR --cache DIR [--profile quick] [--only sharp]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from prefixlab.claim import Claim
from prefixlab.experiments.claims import em, mean, paired_gap, pct, protocol
from prefixlab.experiments.profiles import MIX, PROFILES
from prefixlab.experiments.sections import section
from prefixlab.sweep import SweepConfig
from prefixlab.sweep_report import save_figure

SHARP = {"pm-sharp-sort": ("sort_asc", "sort_desc"), "pm-sharp-add": ("add1", "add2")}  # name: (base, tuned task)
SHARP_METHODS = ("none", "prefix", "prefix_kv", "prefix_memory", "lora")
SHARP_LENGTHS = (1, 8)
DILUTION_TASKS = ("sort_asc", "add1")
DILUTION_LENGTHS = (1, 16)  # the smallest grid: one slot, and a prefix as long as most of the content
DILUTION_TUNE = 1000  # tuning budget of the dilution sweep (stopping usually ends elicitation runs sooner)
CONTEXT = ("prefix", "prefix_kv", "prefix_memory")
TITLE = "PrefixMemory-Tuning: a prefix outside the softmax"


def configs(profile: str) -> dict[str, SweepConfig]:
    """One base per sweep (shared_base: seeds vary the tuned runs, as the paper profile's exp 3 and 4 do), to fit a
    2-core CPU; the profile's exp 1 / exp 2 sizes otherwise."""
    prof = PROFILES[profile]
    seeds = max(prof["seeds"], 3) if profile != "tiny" else prof["seeds"]  # >= 3 seeds for 95 % intervals
    model, pre, tune = prof["exp1"]
    out = {name: SweepConfig(model=model, pretrain=base, tasks=(base, task), tune_tasks=(task,),
                             methods=SHARP_METHODS, prefix_lengths=SHARP_LENGTHS, pretrain_steps=pre, tune_steps=tune,
                             seeds=seeds, eval_samples=prof["eval"], cross_eval=False, lr_grid=prof["lr_grid"],
                             shared_base=True)
           for name, (base, task) in SHARP.items()}
    model, pre, tune = prof["exp2"]
    out["pm-dilution"] = SweepConfig(model=model, pretrain=MIX, tasks=tuple(MIX.split(",")),
                                     tune_tasks=DILUTION_TASKS, methods=("none", "prefix", "prefix_memory"),
                                     prefix_lengths=DILUTION_LENGTHS, pretrain_steps=pre,
                                     tune_steps=min(tune, DILUTION_TUNE), seeds=seeds, eval_samples=prof["eval"],
                                     cross_eval=False, lr_grid=prof["lr_grid"], shared_base=True)
    return out


def _gap_text(records, P, tasks) -> tuple[str, float, float]:
    g, h = paired_gap(records, dict(method="prefix_memory", context_len=P), dict(method="prefix", context_len=P), tasks)
    h = 0.0 if h is None or np.isnan(h) else h
    return f"{100 * g:+.1f} pp [{100 * (g - h):+.1f}, {100 * (g + h):+.1f}]", g, h


def claims(records_by_name: dict, profile: str) -> list[Claim]:
    """{run directory name: records} -> the verdicts; a pure function of the records."""
    cfgs, out = configs(profile), []
    sort = records_by_name.get("pm-sharp-sort")
    if sort:
        how = protocol(cfgs["pm-sharp-sort"], sort)
        out.append(Claim("prefix_memory sharp: base pretrained on sort_asc", pct(em(sort, task="sort_asc",
                                                                                  method="none")),
                         ">= 90 %", mean(em(sort, task="sort_asc", method="none")) >= 0.9, how))
        for P in SHARP_LENGTHS:
            for m in CONTEXT:
                xs = em(sort, task="sort_desc", method=m, context_len=P)
                out.append(Claim(f"prefix_memory sharp: {m} P={P} tuned to sort_desc (needs a new attention pattern)",
                                 pct(xs), "~0 % (<= 5 %): Petrov's identity", mean(xs) <= 0.05, how))
        xs = em(sort, task="sort_desc", method="lora")
        out.append(Claim("prefix_memory sharp: LoRA tuned to sort_desc (the task can be learned)", pct(xs), ">= 80 %",
                         mean(xs) >= 0.8, how))
    add = records_by_name.get("pm-sharp-add")
    if add:
        how = protocol(cfgs["pm-sharp-add"], add)
        out.append(Claim("prefix_memory sharp: base pretrained on add1 (on add1 / on add2)",
                         f"{pct(em(add, task='add1', method='none'))} / {pct(em(add, task='add2', method='none'))}",
                         ">= 90 % on add1", mean(em(add, task="add1", method="none")) >= 0.9, how))
        for P in SHARP_LENGTHS:
            text, g, h = _gap_text(add, P, ("add2",))
            means = ", ".join(f"{m} {pct(em(add, task='add2', method=m, context_len=P))}" for m in CONTEXT)
            out.append(Claim(f"prefix_memory sharp: add1 base tuned to add2 (same attention, new output), P={P}: "
                             "prefix_memory − prefix", f"{means}; paired gap {text}",
                             "> 0 (prefix_memory gains)", g - h > 0, how))
        xs = em(add, task="add2", method="lora")
        out.append(Claim("prefix_memory sharp: LoRA tuned to add2", pct(xs), "(for comparison)", None, how))
    dil = records_by_name.get("pm-dilution")
    if dil:
        how = protocol(cfgs["pm-dilution"], dil)
        for P in DILUTION_LENGTHS:
            for t in DILUTION_TASKS:  # one claim per task: a task both solve fully would hide the other's gap
                text, g, h = _gap_text(dil, P, (t,))
                means = (f"prefix {pct(em(dil, task=t, method='prefix', context_len=P))}, prefix_memory "
                         f"{pct(em(dil, task=t, method='prefix_memory', context_len=P))}")
                out.append(Claim(f"prefix_memory dilution: mixture base, {t}, P={P}: prefix_memory − prefix "
                                 "(elicitation)", f"{means}; paired gap {text}"
                                 + (" (ahead: interval above 0)" if g - h > 0 else ""),
                                 ">= 0 (not diluted)", g + h >= 0, how))
    return out


# -- post hoc, from the tuned runs: accuracy per output position and the prefix's attention share -----------------

def position_profile(run_dir: Path, task: str, tag: str, seed: int, P: int | None, n: int = 256) -> dict:
    """Teacher-forced accuracy per output position (N values: content length T = N + j at output j) and, for a
    slot context, its attention share per content query row (mean over layers, heads and inputs; zeros if none)."""
    import jax

    from prefixlab import tasks as T
    from prefixlab.analysis import attention_maps, load_run

    run = load_run(run_dir)
    model, ctx = (run.base_model(seed), None) if tag == "none" else run.model(task, tag, seed, context_len=P)
    batch = T.parse_mixture(task).batch(jax.random.key(11), n, split="test")
    logits = model(batch.tokens_BT, ctx, logits_from=T.FIRST_TARGET)
    right_BN = np.asarray(logits.argmax(-1) == batch.targets_BT[:, T.FIRST_TARGET:])
    S = 0 if ctx is None else ctx.length
    share_T = np.zeros(batch.tokens_BT.shape[1])
    if S:
        maps = attention_maps(model, batch.tokens_BT, ctx)
        share_T = np.mean([m[:, :, S:, :S].sum(-1).mean(axis=(0, 1)) for m in maps], axis=0)
    return {"accuracy_N": right_BN.mean(0).tolist(), "share_T": share_T.tolist()}


def query_only_ceiling(task: str, n_fit: int = 20000, n_test: int = 3200) -> tuple[float, float]:
    """(token accuracy, exact match) of the best predictor that sees only the query row's token and position: the
    majority target per (token, output position) on n_fit training inputs, scored teacher-forced on n_test test
    inputs. What any query-dependent output change can reach without the content."""
    import collections

    import jax

    from prefixlab import tasks as T

    mix, F = T.parse_mixture(task), T.FIRST_TARGET

    def rows(b):
        tok, tgt = np.asarray(b.tokens_BT[:, F:]), np.asarray(b.targets_BT[:, F:])
        return tok, np.broadcast_to(np.arange(tok.shape[1]), tok.shape), tgt

    counts = collections.defaultdict(collections.Counter)
    for t, p, y in zip(*(a.ravel() for a in rows(mix.batch(jax.random.key(0), n_fit, split="train")))):
        counts[(t, p)][y] += 1
    tok, pos, tgt = rows(mix.batch(jax.random.key(1), n_test, split="test"))
    guess = lambda t, p: counts[(t, p)].most_common(1)[0][0] if counts[(t, p)] else -1
    right = np.vectorize(guess)(tok, pos) == tgt
    return float(right.mean()), float(right.all(1).mean())


def sharp_posthoc(out: Path, seeds=(0, 1, 2)) -> dict:
    """Teacher-forced token accuracy (256 test inputs) of each sharp sweep's selected runs per seed, and the
    query-only ceiling of each tuned task."""
    res = {}
    for name, (_, task) in SHARP.items():
        rows = {f"{m} P={P}": [float(np.mean(position_profile(out / name, task, m, s, P)["accuracy_N"]))
                               for s in seeds] for m in CONTEXT for P in SHARP_LENGTHS}
        rows["lora"] = [float(np.mean(position_profile(out / name, task, "lora", s, None)["accuracy_N"]))
                        for s in seeds]
        res[name] = {"task": task, "teacher_forced": rows, "query_only_ceiling": query_only_ceiling(task)}
    return res


def dilution_profiles(run_dir: Path, seeds, lengths=DILUTION_LENGTHS, tasks=DILUTION_TASKS) -> dict:
    """{(method, task, P): [per seed profile]} for prefix and prefix_memory."""
    out = {}
    for m, tag in (("prefix", "prefix"), ("prefix_memory", "prefix_memory")):
        for t in tasks:
            for P in lengths:
                out[(m, t, P)] = [position_profile(run_dir, t, tag, s, P) for s in seeds]
    return out


def _band(ax, x, ys, **kw):
    from prefixlab.results import mean_std_ci

    ys = np.asarray(ys)
    stats = [mean_std_ci(list(col)) for col in ys.T]
    m = np.array([s[0] for s in stats])
    h = np.array([0.0 if s[2] is None or np.isnan(s[2]) else s[2] for s in stats])
    line, = ax.plot(x, m, marker="o", ms=3, **kw)
    ax.fill_between(x, m - h, m + h, color=line.get_color(), alpha=0.2)


def dilution_figure(profiles: dict, path: Path, lengths=DILUTION_LENGTHS, tasks=DILUTION_TASKS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab import tasks as T

    fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(5 * (1 + len(tasks)), 4))
    content = np.arange(2 * T.SEQ_LEN - 1) + 1  # keys a query row sees: its own position + 1
    for P in lengths:
        shares = [p["share_T"] for t in tasks for p in profiles[("prefix", t, P)]]
        _band(axes[0], content, shares, label=f"prefix P={P}")
    axes[0].set(xlabel="content keys the query sees (T)", ylabel="attention share on the prefix slots",
                title="prefix's share of attention (mean over layers, heads)")
    axes[0].legend(fontsize=8)
    outputs = T.SEQ_LEN + np.arange(T.SEQ_LEN)  # content length T at each output position
    for ax, t in zip(axes[1:], tasks):
        for P in lengths:
            for m, style in (("prefix", "-"), ("prefix_memory", "--")):
                _band(ax, outputs, [p["accuracy_N"] for p in profiles[(m, t, P)]], linestyle=style,
                      label=f"{m} P={P}")
        ax.set(xlabel="content length T at the output position", ylabel="teacher-forced token accuracy",
               title=f"{t}: accuracy per output position", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def sharp_figure(records_by_name: dict, path: Path) -> Path:
    """Exact match per method and P on each sharp test's tuned task, mean and 95 % interval over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab.results import mean_std_ci

    fig, axes = plt.subplots(1, len(SHARP), figsize=(6 * len(SHARP), 3.8))
    for ax, (name, (base, task)) in zip(np.atleast_1d(axes), SHARP.items()):
        recs = records_by_name.get(name) or []
        bars = [("base", dict(method="none"))] + [(f"{m} P={P}", dict(method=m, context_len=P))
                                                  for m in CONTEXT for P in SHARP_LENGTHS] + [("lora",
                                                                                               dict(method="lora"))]
        for i, (label, match) in enumerate(bars):
            m, _, h = mean_std_ci(em(recs, task=task, **match))
            if m is None:
                continue
            ax.bar(i, 100 * m, yerr=None if h is None or np.isnan(h) else 100 * h, capsize=3)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=40, ha="right", fontsize=8)
        ax.set(ylabel="exact match %", ylim=(0, 105), title=f"{base} base → {task}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


# -- depth: where the content-attention change comes from ---------------------------------------------------------

DEPTHS = (1, 2, 4, 8)
DEPTH_MODEL = "small-exp3"  # d 64, 4 heads; its n_layer replaced by each depth
DEPTH_SIZES = dict(pretrain=3000, tune=600, P=4, seeds=3)


def _content_change(model, base, tokens_BT, ctx) -> list[float]:
    """Per layer, mean over inputs, heads and content rows of the total-variation distance between the content
    attention with the method (slot columns removed, rows renormalised) and the base's: 0 where the layer attends as
    the base does."""
    from prefixlab.analysis import attention_maps

    S = ctx.length
    out = []
    for with_, without in zip(attention_maps(model, tokens_BT, ctx), attention_maps(base, tokens_BT, None)):
        c = with_[:, :, S:, S:]
        if S:  # renormalise only where slots took mass (no rounding added where there are none)
            c = c / np.maximum(c.sum(-1, keepdims=True), 1e-30)
        out.append(float(0.5 * np.abs(c - without).sum(-1).mean()))
    return out


def depth_scan(cache: Path, depths=DEPTHS, sizes=DEPTH_SIZES, task="sort_asc", lr=5e-2) -> dict:
    """For each depth L: a base of DEPTH_MODEL with L layers pretrained on exp 2's mixture, prefix and prefix_memory
    (P = sizes["P"]) tuned on `task` for sizes["tune"] steps on it (sizes["seeds"] seeds, one rate, fixed steps);
    per layer the content-attention change (`_content_change`) and the tuned runs' exact match. Returns
    {"L": {"method": {"change_EL": [[...]], "exact_match_E": [...]}}}."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from prefixlab import tasks as T
    from prefixlab.bases import BaseSpec, load_or_pretrain
    from prefixlab.config import preset
    from prefixlab.methods import RunData, get_method
    from prefixlab.train import OptimConfig
    from prefixlab.tune import RunSpec, TuneSpec, tune_group

    mix, tuned = T.parse_mixture(MIX), T.parse_mixture(task)
    tokens = tuned.batch(jax.random.key(5), 128, split="test").tokens_BT
    seeds, P, out = list(range(sizes["seeds"])), sizes["P"], {}
    for L in depths:
        cfg = preset(DEPTH_MODEL, n_layer=L, vocab_size=mix.vocab_size)
        graphdef, base_E, *_ = load_or_pretrain(cache, BaseSpec(cfg, mix, sizes["pretrain"], optim=OptimConfig()), [0],
                                                progress=False, log=lambda *a, **k: None)
        base = jax.tree.map(lambda x: x[0], base_E)
        shared_E = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(seeds), *x.shape[1:])), base_E)
        base_model = nnx.merge(graphdef, base)
        out[L] = {}
        for name in ("prefix", "prefix_memory"):
            method = get_method(name)
            spec = TuneSpec(method, cfg.replace(dropout=0.0), tuned, sizes["tune"], eval_samples=400)
            measured, trainable_ER, _ = tune_group(spec, shared_E, [RunSpec(P, lr)], seeds, progress=False)
            changes = []
            for e in seeds:
                tr = jax.tree.map(lambda x: x[e, 0], trainable_ER)
                model, ctx = method.build(method.graphdef(cfg), tr, base, RunData(jnp.ones((P,), bool)), cfg)
                changes.append(_content_change(model, base_model, tokens, ctx))
            out[L][name] = {"change_EL": changes, "exact_match_E": [m["exact_match"] for m in measured]}
    return out


def depth_figure(scan: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ("prefix", "prefix_memory")
    fig, axes = plt.subplots(1, len(methods), figsize=(11, 3.8), sharey=True)
    for ax, m in zip(axes, methods):
        for L, by in scan.items():
            _band(ax, np.arange(int(L)), by[m]["change_EL"], label=f"{L} layer(s)")
        ax.set(xlabel="layer", ylabel="content-attention change (mean TV distance)", yscale="symlog",
               title=f"{m}: change of the content attention vs the base")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


@section("prefix_memory", configs=configs)
def run(repro) -> None:
    from prefixlab.experiments.report import records_table

    cfgs = configs(repro.profile)
    records = {name: repro.sweep(name, config) for name, config in cfgs.items()}
    repro.report.add(claims(records, repro.profile))
    figs = repro.report.figures
    sharp = sharp_figure(records, figs / "prefix_memory_sharp.png")
    seeds = list(range(cfgs["pm-dilution"].seeds))
    dil = dilution_figure(dilution_profiles(repro.out / "pm-dilution", seeds), figs / "prefix_memory_dilution.png")
    repro.report.section(TITLE, repro.timing.so_far(),
                         "\n\n".join(records_table(r) for r in records.values())
                         + f"\n\n![sharp test]({sharp.relative_to(repro.out)})\n\n![dilution]"
                         f"({dil.relative_to(repro.out)})")


def main(argv=None) -> None:
    """Runs the section's sweeps (or --only some of them) into --out with bases cached in --cache, then writes
    claims.json (the verdicts) and the figures into --out."""
    import json

    from prefixlab.sweep import run_sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--profile", default="quick", choices=list(PROFILES))
    ap.add_argument("--only", default="", help="comma list of: sharp, sharp-posthoc, dilution, depth (default: all)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    only = {s.strip() for s in args.only.split(",") if s.strip()} or {"sharp", "sharp-posthoc", "dilution", "depth"}
    cfgs = {n: c for n, c in configs(args.profile).items()
            if ("sharp" in only and n.startswith("pm-sharp")) or ("dilution" in only and n == "pm-dilution")}
    records = {}
    for name, config in cfgs.items():
        import dataclasses

        config = dataclasses.replace(config, cache_dir=args.cache)
        run_dir = out / name
        records[name] = run_sweep(config, run_dir, resume=(run_dir / "config.json").exists(), progress=False)
    got = claims(records, args.profile)
    (out / f"claims-{'-'.join(sorted(only))}.json").write_text(json.dumps([c.__dict__ for c in got], indent=1))
    for c in got:
        print(f"{c.verdict_text:>16} | {c.statement} | {c.measured}")
    if any(n.startswith("pm-sharp") for n in records):
        print("figure:", sharp_figure(records, out / "prefix_memory_sharp.png"))
    if "pm-dilution" in records:
        profiles = dilution_profiles(out / "pm-dilution", list(range(cfgs["pm-dilution"].seeds)))
        (out / "dilution_profiles.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in profiles.items()}))
        print("figure:", dilution_figure(profiles, out / "prefix_memory_dilution.png"))
    if "sharp-posthoc" in only:
        post = sharp_posthoc(out)
        (out / "sharp_posthoc.json").write_text(json.dumps(post, indent=1))
        for name, d in post.items():
            print(f"{name} {d['task']}: query-only ceiling token {100 * d['query_only_ceiling'][0]:.1f} %, exact "
                  f"{100 * d['query_only_ceiling'][1]:.1f} %")
            for k, v in d["teacher_forced"].items():
                print(f"  {k}: teacher-forced token accuracy {np.round(100 * np.array(v), 1).tolist()}")
    if "depth" in only:
        scan = depth_scan(Path(args.cache))
        (out / "depth.json").write_text(json.dumps(scan))
        for L, by in scan.items():
            for m, d in by.items():
                print(f"depth L={L} {m}: exact match {d['exact_match_E']}; change per layer (seed mean) "
                      f"{np.mean(d['change_EL'], axis=0).round(5).tolist()}")
        print("figure:", depth_figure(scan, out / "prefix_memory_depth.png"))


if __name__ == "__main__":
    main()
