"""Capacity scan (issue 35, item 2): the longest random sequence N_max a trained context of P slots makes a frozen model
generate greedily, per method, model and precision, beside Petrov's one-virtual-token construction.

Models: the profile's exp 2 mixture base (the base cache's, seed 0) and the same config at random init (seed 0). Both
get block_size = n_cap content positions: the base was pretrained on 19, so its positions past 19 are new rows drawn
N(0, std of its trained rows) (`extend_positions`); a target longer than 19 tokens runs through them. Predictions
judged (docs/results/capacity.md): (a) N_max grows about linearly in P (Meyer et al. ICML 2026); (b) precision raises
N_max of trained contexts much less than the construction's capacity, which spends precision per token; (c) prefix
≥ soft prompt at equal P; (d) the pretrained base holds more than the random model.

Run: python scripts/reproduce.py --profile quick --sections cram --out DIR --cache-dir DIR
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.claim import Claim
from prefixlab.experiments.profiles import MIX, PROFILES
from prefixlab.experiments.sections import section
from prefixlab.results import mean_std_ci
from prefixlab.safe_paths import real_dir, replace_bytes

TITLE = "Capacity: how long a sequence a trained context makes a frozen model generate"
METHODS = ("soft_prompt", "prefix", "prefix_kv", "prefix_memory")
MODELS = ("random", "pretrained")
# the construction's vocabulary ladder (10 x 2^i: not powers of two, whose k / V are exact in binary)
VOCAB_LADDER = tuple(10 * 2**i for i in range(12))
SIZES = {
    "quick": dict(lengths=(1, 2, 4, 8), n_cap=96, targets=3, seeds=(0,), steps=5000, patience=300, lr=1e-2,
                  chunk=100, methods=METHODS, precisions=("bfloat16", "float32", "float64"), ladder=VOCAB_LADDER,
                  models=MODELS),
    "tiny": dict(lengths=(1, 2), n_cap=6, targets=3, seeds=(0,), steps=40, patience=15, lr=1e-1, chunk=20,
                 methods=("prefix_kv",), precisions=("float32",), ladder=(), models=("random",)),
}
SIZES["decide"] = SIZES["quick"]
SIZES["paper"] = dict(SIZES["quick"], lengths=(1, 2, 4, 8, 16), n_cap=128, targets=5, steps=8000)  # not run yet


@dataclasses.dataclass(frozen=True)
class CramPlan:
    """What the scan runs for a profile: the exp 2 base (model preset, pretraining steps) and the scan's sizes."""

    model: str
    pretrain_steps: int
    lengths: tuple[int, ...]
    n_cap: int
    targets: int
    seeds: tuple[int, ...]
    steps: int
    patience: int
    lr: float
    chunk: int
    methods: tuple[str, ...]
    precisions: tuple[str, ...]
    ladder: tuple[int, ...]  # the construction's vocabularies tried (none: its reach at V only)
    models: tuple[str, ...]  # of MODELS (tiny: the random one, which needs no pretraining)


def configs(profile: str) -> CramPlan:
    if profile not in SIZES:
        raise ValueError(f"the cram scan has no sizes for profile {profile!r}; valid: {', '.join(SIZES)}")
    model, pre, _ = PROFILES[profile]["exp2"]
    return CramPlan(model, pre, **SIZES[profile])


def extend_positions(params, block_size: int, key):
    """The base's parameters with its position table grown to `block_size` rows; the new rows are drawn
    N(0, std of the trained rows), so positions past pretraining are as large as the trained ones but carry nothing."""
    pos = params["pos_emb"][...]
    if block_size <= pos.shape[0]:
        return params
    extra = jax.random.normal(key, (block_size - pos.shape[0], pos.shape[1]), pos.dtype) * jnp.std(pos)
    out = jax.tree.map(lambda x: x, params)  # a new state tree: the caller's stays as it was
    out["pos_emb"].set_value(jnp.concatenate([pos, extra]))
    return out


def bases(plan: CramPlan, cache: Path, log=print):
    """{model name: (cfg, params)} for plan.models: "pretrained", the exp 2 mixture base (seed 0, restored or
    pretrained into `cache`), and "random", the same config at random init (key 0); both with block_size = n_cap."""
    from flax import nnx

    from prefixlab.bases import load_or_pretrain
    from prefixlab.model import Transformer
    from prefixlab.sweep import SweepConfig, base_spec

    spec = base_spec(SweepConfig(model=plan.model, pretrain=MIX, tasks=MIX, pretrain_steps=plan.pretrain_steps, seeds=1))
    cfg = spec.cfg.replace(block_size=max(plan.n_cap, spec.cfg.block_size), dropout=0.0)
    out = {}
    if "random" in plan.models:  # eager: a jitted init compiles for longer than it runs
        out["random"] = (cfg, nnx.state(Transformer(cfg, rngs=nnx.Rngs(params=jax.random.key(0)))))
    if "pretrained" in plan.models:
        _, params_E, *_ = load_or_pretrain(Path(cache), spec, [0], progress=False, log=log)
        out["pretrained"] = (cfg, extend_positions(jax.tree.map(lambda x: x[0], params_E), cfg.block_size,
                                                   jax.random.key(19)))
    return out


def scan(plan: CramPlan, models: dict, out: Path, log=print, progress: bool = False) -> list[dict]:
    """Every (model, precision, method) program of the plan; each one's records are appended to
    out/records.jsonl as it finishes, and a rerun skips those already there (resume)."""
    from prefixlab.cram import CramSpec, cram, random_targets
    from prefixlab.methods import get_method
    from prefixlab.results import append_jsonl, read_jsonl

    path = out / "records.jsonl"
    records = read_jsonl(path) if path.exists() else []
    done = {(r["model"], r["precision"], r["method"]) for r in records}
    todo = [(m, p, k) for m in models for p in plan.precisions for k in plan.methods if (m, p, k) not in done]
    start = time.perf_counter()
    for j, (model, precision, name) in enumerate(todo, 1):
        cfg, params = models[model]
        targets = random_targets(0, plan.targets, plan.n_cap, cfg.vocab_size)  # the same targets everywhere
        spec = CramSpec(get_method(name), cfg, precision, plan.lengths, plan.n_cap, lr=plan.lr,
                        patience=plan.patience, steps=plan.steps, chunk=plan.chunk)
        t = time.perf_counter()
        got, _ = cram(spec, params, targets, plan.seeds, progress=progress, label=f"[{j}/{len(todo)}] {model} ")
        got = [dict(r, model=model) for r in got]
        append_jsonl(path, got)
        records += got
        means = ", ".join(f"P={p}: {np.mean([r['n_max'] for r in got if r['context_len'] == p]):.1f}"
                          for p in plan.lengths)
        log(f"  cram [{j}/{len(todo)}] {model} {precision} {name}: N_max {means} ({time.perf_counter() - t:.0f} s; "
            f"{(time.perf_counter() - start) / 60:.1f} min so far)", flush=True)
    write_csv(out / "records.csv", records)
    return records


def construction_reach(plan: CramPlan, cfg, out: Path, log=print) -> dict:
    """Per precision: how many of each target's first N tokens the construction generates exactly (N = what one
    virtual token holds at the base's width: d = 2N + 1 <= d_model, and <= n_cap), and its vocabulary limit (the
    largest V of plan.ladder that decodes every token). Kept in out/construction.json (reused on a rerun)."""
    from prefixlab.cram import random_targets
    from prefixlab.theory import reach

    path = out / "construction.json"
    if path.exists():
        return json.loads(path.read_text())
    N = min(plan.n_cap, (cfg.d_model - 1) // 2)
    targets = random_targets(0, plan.targets, plan.n_cap, cfg.vocab_size)[:, :N]
    res = {"vocab_size": cfg.vocab_size, "n": N, "d_model": 2 * N + 1, "precisions": {}}
    for precision in plan.precisions:
        t = time.perf_counter()
        lim = reach.vocab_limit(precision, plan.ladder) if plan.ladder else {}
        res["precisions"][precision] = {"reach": [reach.reach(y, cfg.vocab_size, precision) for y in targets], **lim}
        limit = f"; exact up to V = {lim['largest_exact']} (fails at {lim['smallest_failing']})" if lim else ""
        log(f"  construction {precision}: reach {res['precisions'][precision]['reach']} of {N}{limit} "
            f"({time.perf_counter() - t:.0f} s)", flush=True)
    replace_bytes(path, json.dumps(res, indent=1).encode())
    return res


def write_csv(path: Path, records: list[dict]) -> None:
    """records.csv beside records.jsonl (a list, n_curve, as its Python text), replacing the file at `path`."""
    from prefixlab.results import write_rows_csv

    write_rows_csv(path, records, list(dict.fromkeys(k for r in records for k in r)))


# -- statistics: pure functions of the records ---------------------------------------------------------------------

def cells(records) -> dict:
    """{(model, precision, method): {P: dict(n=[N_max per run], mean, half (95 % t), capped: any run at the cap,
    floats)}}."""
    out = {}
    for r in records:
        c = out.setdefault((r["model"], r["precision"], r["method"]), {}).setdefault(
            r["context_len"], dict(n=[], capped=False, floats=r["trainable_floats"]))
        c["n"].append(r["n_max"])
        c["capped"] |= bool(r["reached_cap"])
    for by_p in out.values():
        for c in by_p.values():
            m, _, h = mean_std_ci(c["n"])
            c.update(mean=m, half=h)
    return out


def growth(by_p: dict, log2v: float) -> dict:
    """Least-squares line N_max = a + b P over the P whose runs all stayed below the cap, and the power-law exponent
    of N_max in P (log-log slope) over those with N_max > 0. slope_bits: b log2 V per float of one slot."""
    ps = sorted(p for p, c in by_p.items() if not c["capped"])
    res = dict(points=len(ps), slope=None, exponent=None, slope_bits=None)
    if len(ps) >= 2:
        x, y = np.array(ps, float), np.array([by_p[p]["mean"] for p in ps])
        b = float(np.polyfit(x, y, 1)[0])
        per_slot = by_p[ps[0]]["floats"] / ps[0]
        res.update(slope=b, slope_bits=b * log2v / per_slot)
        pos = [(p, v) for p, v in zip(x, y) if v > 0]
        if len(pos) >= 2:
            res["exponent"] = float(np.polyfit(np.log([p for p, _ in pos]), np.log([v for _, v in pos]), 1)[0])
    return res


def _fmt(c) -> str:
    if c is None:
        return "–"
    h = "" if c["half"] is None or math.isnan(c["half"]) else f" ± {c['half']:.1f}"
    return f"{'≥ ' if c['capped'] else ''}{c['mean']:.1f}{h}"


def _paired(records, a: dict, b: dict, key=("model", "precision", "context_len", "target", "seed"), field="n_max"):
    """Mean and 95 % half-width of (a − b) over runs paired by `key`."""
    pick = lambda m: {tuple(r[k] for k in key): r[field] for r in records if all(r[k] == v for k, v in m.items())}
    x, y = pick(a), pick(b)
    m, _, h = mean_std_ci([x[k] - y[k] for k in sorted(x.keys() & y.keys())])
    return m, (0.0 if h is None or math.isnan(h) else h), len(x.keys() & y.keys())


def claims(records, construction: dict, profile: str) -> list[Claim]:
    """The four predictions' verdicts (True holds, False does not, None undecided), a pure function of the records
    and the construction's results."""
    plan, out = configs(profile), []
    V = construction.get("vocab_size", 10) if construction else 10
    how = (f"{plan.model} exp 2 base / random init; P {list(plan.lengths)}, {plan.targets} targets × "
           f"{len(plan.seeds)} seeds, N ≤ {plan.n_cap}, lr {plan.lr:g}, ≤ {plan.patience} steps per token, ≤ "
           f"{plan.steps} steps")
    cs = cells(records)
    for (model, precision, method), by_p in sorted(cs.items()):
        if precision != "float32":
            continue
        g = growth(by_p, math.log2(V))
        means = ", ".join(f"P={p}: {_fmt(by_p[p])}" for p in sorted(by_p))
        if g["exponent"] is None:
            verdict, note = None, f"undecided: {g['points']} P below the cap with N_max > 0"
        else:
            verdict = bool(0.5 <= g["exponent"] <= 1.5)
            note = f"log-log exponent {g['exponent']:.2f}, slope {g['slope']:.2f} tokens per slot"
        out.append(Claim(f"cram (a) {model} {method} f32: N_max grows about linearly in P", f"{means}; {note}",
                         "exponent in [0.5, 1.5] (Meyer et al. 2026: linear)", verdict, how))
    cons = (construction or {}).get("precisions", {})
    lo, hi = "bfloat16", "float64"
    if lo in cons and hi in cons and cons[lo].get("largest_exact"):
        bits = {p: math.log2(cons[p]["largest_exact"]) for p in (lo, hi)}
        c_gain = bits[hi] / bits[lo]  # a lower bound where float64 never failed
        for model in MODELS:
            for method in plan.methods:
                a, b = cs.get((model, lo, method)), cs.get((model, hi, method))
                if not a or not b:
                    continue
                n_lo, n_hi = (np.mean([c["mean"] for c in x.values()]) for x in (a, b))
                t_gain = n_hi / n_lo if n_lo > 0 else math.inf
                out.append(Claim(f"cram (b) {model} {method}: bf16 → f64 raises N_max much less than the construction's "
                                 "bits per token", f"trained ×{t_gain:.2f} ({n_lo:.1f} → {n_hi:.1f}, mean over P); "
                                 f"construction ×{'≥ ' if cons[hi]['smallest_failing'] is None else ''}{c_gain:.1f} "
                                 f"(log2 V_max {bits[lo]:.1f} → {bits[hi]:.1f} bits)",
                                 "trained gain < construction gain", bool(t_gain < c_gain), how))
    for model in MODELS:
        for precision in plan.precisions:
            m, h, n = _paired(records, dict(model=model, precision=precision, method="prefix"),
                              dict(model=model, precision=precision, method="soft_prompt"))
            if not n:
                continue
            mb, hb, _ = _paired(records, dict(model=model, precision=precision, method="prefix"),
                                dict(model=model, precision=precision, method="soft_prompt"), field="bits_per_float")
            out.append(Claim(f"cram (c) {model} {precision}: prefix ≥ soft prompt in N_max at equal P",
                             f"prefix − soft prompt {m:+.1f} ± {h:.1f} tokens ({n} pairs); per float "
                             f"{mb:+.4f} ± {hb:.4f} bits", "gap not below 0", bool(m + h >= 0), how))
    for precision in plan.precisions:
        for method in plan.methods:
            m, h, n = _paired(records, dict(precision=precision, method=method, model="pretrained"),
                              dict(precision=precision, method=method, model="random"),
                              key=("precision", "context_len", "target", "seed"))
            if n:
                out.append(Claim(f"cram (d) {method} {precision}: the pretrained base holds more than the random model",
                                 f"pretrained − random {m:+.1f} ± {h:.1f} tokens ({n} pairs)", "gap above 0",
                                 None if m - h <= 0 <= m + h else bool(m - h > 0), how))
    return out


def markdown_table(records, V: int) -> str:
    """N_max(P) mean ± 95 % half-width (≥: some run reached the cap), the linear slope in bits per float of a slot."""
    cs = cells(records)
    ps = sorted({p for by_p in cs.values() for p in by_p})
    head = ("| model | precision | method | " + " | ".join(f"P={p}" for p in ps) + " | slope (tokens/slot) | "
            "bits per float (slope) |\n|---|---|---|" + "---|" * (len(ps) + 2))
    rows = []
    for (model, precision, method), by_p in sorted(cs.items()):
        g = growth(by_p, math.log2(V))
        s = "–" if g["slope"] is None else f"{g['slope']:.2f}"
        b = "–" if g["slope_bits"] is None else f"{g['slope_bits']:.4f}"
        rows.append(f"| {model} | {precision} | {method} | " + " | ".join(_fmt(by_p.get(p)) for p in ps)
                    + f" | {s} | {b} |")
    return "\n".join([head, *rows])


def figure(records, construction: dict, path: Path) -> Path:
    """N_max vs P per method, one panel per model × precision, mean and 95 % t-interval over runs; the cap dashed,
    the construction's reach at the base's width (one virtual token) as a star at P = 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab.sweep_report import save_figure

    cs = cells(records)
    models = [m for m in MODELS if any(k[0] == m for k in cs)]
    precisions = list(dict.fromkeys(k[1] for k in sorted(cs, key=lambda k: ("bfloat16", "float32", "float64").index(k[1]))))
    fig, axes = plt.subplots(len(models), len(precisions), figsize=(4.6 * len(precisions), 3.8 * len(models)),
                             squeeze=False, sharey=True)
    cap = max((r["n_cap"] for r in records), default=0)
    cons = (construction or {}).get("precisions", {})
    for i, model in enumerate(models):
        for j, precision in enumerate(precisions):
            ax = axes[i][j]
            for method in METHODS:
                by_p = cs.get((model, precision, method))
                if not by_p:
                    continue
                ps = sorted(by_p)
                m = [by_p[p]["mean"] for p in ps]
                h = [0.0 if by_p[p]["half"] is None or math.isnan(by_p[p]["half"]) else by_p[p]["half"] for p in ps]
                ax.errorbar(ps, m, yerr=h, marker="o", ms=4, capsize=3, label=method)
            ax.axhline(cap, ls="--", color="grey", lw=0.8, label=f"cap N = {cap}")
            if precision in cons:
                reach = cons[precision]["reach"]
                ax.scatter([1], [np.mean(reach)], marker="*", s=140, color="k", zorder=4,
                           label=f"construction, 1 token, d = {construction['d_model']}")
            ax.set(xscale="log", title=f"{model} base, {precision}", xlabel="context length P",
                   ylabel="N_max (greedy-exact tokens)" if j == 0 else None)
            ax.set_xticks(sorted({p for by_p in cs.values() for p in by_p}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_ylim(bottom=0)  # N_max >= 0; a t-interval of three runs can reach below
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def run_scan(profile: str, out: Path, cache: Path, log=print, progress: bool = False) -> tuple[list, dict, list]:
    """The whole scan into `out`: records.jsonl/.csv, construction.json, claims.json, cram.png. Returns
    (records, construction, claims)."""
    plan = configs(profile)
    real_dir(out)  # a link there is replaced by a folder: nothing is written where it points
    models = bases(plan, cache, log=log)
    cfg = next(iter(models.values()))[0]
    construction = construction_reach(plan, cfg, out, log=log)
    records = scan(plan, models, out, log=log, progress=progress)
    got = claims(records, construction, profile)
    replace_bytes(out / "claims.json", json.dumps([dataclasses.asdict(c) for c in got], indent=1).encode())
    figure(records, construction, out / "cram.png")
    return records, construction, got


@section("cram")
def run(repro) -> None:
    from prefixlab.bases import default_cache_dir

    start = time.perf_counter()
    out = repro.out / "cram"
    records, construction, got = run_scan(repro.profile, out, repro.cache_dir or default_cache_dir(), log=repro.log,
                                          progress=repro.progress)
    repro.report.add(got)
    fig = repro.report.figures / "cram.png"
    replace_bytes(fig, (out / "cram.png").read_bytes())
    cons = ", ".join(f"{p}: reach {np.mean(c['reach']):.0f} of {construction['n']}"
                     + (f", exact for V ≤ {c['largest_exact']}" if c.get("largest_exact") else "")
                     for p, c in construction["precisions"].items())
    repro.report.section(TITLE, time.perf_counter() - start,
                         f"N_max: greedy-exact target tokens, mean ± 95 % t half-width over runs (≥: a run reached "
                         f"the cap). Construction (one virtual token, d = {construction['d_model']}): {cons}.\n\n"
                         + markdown_table(records, construction["vocab_size"])
                         + f"\n\n![capacity]({fig.relative_to(repro.out)})")
