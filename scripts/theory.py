"""Verification table for prefixlab.theory: identities, constructions, capacity, Wang's limitation.

  python scripts/theory.py identities --model-dir tiny     # prefix identities on a preset (random init)
  python scripts/theory.py all --out theory.json            # every check (several minutes on 2 CPU cores)
  python scripts/theory.py wang-scan                        # only Wang E3 / E4 (parameters vs K, 2 layers)

Each row: claim, sizes, measured value (error, loss or count), the threshold it must meet, holds / fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from prefixlab.config import PRESETS, preset  # noqa: E402
from prefixlab.evaluate import greedy_generate  # noqa: E402
from prefixlab.model import Transformer  # noqa: E402
from prefixlab import theory  # noqa: E402

ROWS: list[dict] = []


def row(claim, sizes, measured, threshold, holds):
    r = {"claim": claim, "sizes": sizes, "measured": measured, "threshold": threshold, "holds": bool(holds)}
    ROWS.append(r)
    m = f"{measured:.3g}" if isinstance(measured, float) else str(measured)
    print(f"{'holds' if holds else 'FAILS':5}  {claim:42} {sizes:34} {m:>12}  {threshold}", flush=True)


def identities(name: str, seed: int = 0):
    for dtype, tol in (("float64", 1e-10), ("float32", 1e-5)):
        cfg = preset(name, dropout=0.0, dtype=dtype)
        model = theory.randomize_params(Transformer(cfg, rngs=nnx.Rngs(seed)), jax.random.key(seed), 0.3)
        toks = jax.random.randint(jax.random.key(seed + 1), (4, cfg.block_size), 0, cfg.vocab_size)
        for form in ("layer_inputs", "kv"):
            ctx = theory.random_context(cfg, jax.random.key(seed + 2), 4, form)
            s = theory.identity_summary(theory.attention_identities(model, toks, ctx))
            sz = f"{name} {dtype} {form} P=4"
            row("attention rescaling A^pt=A(1-mass)", sz, s["rescale_err"], f"<= {tol}", s["rescale_err"] <= tol)
            row("output decomposition t^pt", sz, s["output_err"], f"<= {tol}", s["output_err"] <= tol)


def _exact(pred, want):
    return float((np.asarray(pred) != np.asarray(want)).mean())


def constructions(seed: int = 0):
    g = np.random.default_rng(seed)
    for V, N, dtype in ((94, 20, "float32"), (94, 20, "float64"), (1000, 200, "float32"), (20000, 100, "float64")):
        Y = g.integers(0, V, N)
        model, ctx = theory.unconditional(Y, V, dtype=dtype)
        err = _exact(greedy_generate(model, jnp.zeros((1, 1), jnp.int32), N, ctx)[0], Y)
        row("Thm1 unconditional, 1 virtual token", f"V={V} N={N} {dtype}", err, "token error 0", err == 0)
    for V, dtype in ((94, "float32"), (200, "float64")):
        m = g.integers(0, V, V)
        model, ctx = theory.conditional(m, V, dtype=dtype)
        err = _exact(greedy_generate(model, jnp.arange(V)[:, None], 1, ctx)[:, 0], m)
        row("Thm2 conditional x -> m(x)", f"V={V} all x {dtype}", err, "token error 0", err == 0)
    V, N0 = 50, 10
    M = g.integers(0, V, (V, N0))
    model, ctx = theory.responses(M, V)
    err = _exact(greedy_generate(model, jnp.arange(V)[:, None], N0, ctx), M)
    row("responses, N0 virtual tokens", f"V={V} N0={N0} float64", err, "token error 0", err == 0)
    for V, dtype in ((6, "float32"), (12, "float64")):
        M = g.integers(0, V, (V, V))
        model, ctx = theory.two_token(M, V, dtype=dtype)
        pairs = jnp.stack(jnp.meshgrid(jnp.arange(V), jnp.arange(V), indexing="ij"), -1).reshape(-1, 2)
        err = _exact(greedy_generate(model, pairs, 1, ctx)[:, 0], M.reshape(-1))
        row("two-token (2 layers, in-network unpack)", f"V={V} all pairs {dtype}", err, "token error 0", err == 0)
    for dtype in ("float32", "float64"):
        row("guaranteed max V, decoder (1/V^2 >= 8u)", dtype, theory.max_vocab_decoder(dtype), "formula", True)
        row("guaranteed max V, two-token packing", dtype, theory.max_vocab_two_token(dtype), "formula", True)
    lim = theory.measured_decoder_limit("float32", range(2000, 3201, 200))
    row("measured decoder limit float32", "largest exact / smallest failing", f"{lim['largest_exact']}/"
        f"{lim['smallest_failing']}", f">= guaranteed {lim['guaranteed']}", lim["largest_exact"] >= lim["guaranteed"])


def capacity(seed: int = 0):
    model = Transformer(preset("tiny", dropout=0.0, vocab_size=10, block_size=12), rngs=nnx.Rngs(seed))
    theory.randomize_params(model, jax.random.key(seed + 1), 0.3)
    r = theory.capacity_count(model, jax.random.key(seed), n_virtual=8192, n_new=8)
    row("capacity: distinct completions, hard", "tiny (random) V=10 n_new=8", r["distinct_hard"], "<= V", r["distinct_hard"] <= 10)
    row("capacity: distinct completions, virtual", f"{r['n_virtual']} sampled", r["distinct_virtual"], "> V",
        r["distinct_virtual"] > 10)
    # the paper's count is on a pretrained model: a tiny one pretrained on the four-task mixture
    from prefixlab.tasks import parse_mixture
    from prefixlab.train import pretrain

    steps = 1500
    graphdef, params_R, _, _ = pretrain(preset("tiny"), parse_mixture("sort_asc,sort_desc,add1,add2"), [seed],
                                        steps, progress=False)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x[0], params_R))
    r = theory.capacity_count(model, jax.random.key(seed), n_virtual=8192, n_new=8)
    sizes = f"tiny pretrained ({steps} steps, mixture) V=10 n_new=8"
    row("capacity: distinct completions, hard", sizes, r["distinct_hard"], "<= V", r["distinct_hard"] <= 10)
    row("capacity: distinct completions, virtual", f"{r['n_virtual']} sampled", r["distinct_virtual"], "> V",
        r["distinct_virtual"] > 10)


def wang_checks(seeds=(0, 1), dims=(2, 4, 8)):
    W = theory.wang
    for d in dims:
        for seed in seeds:
            p = W.make_problem(d, seed)
            cert = W.certificate(p)
            best = W.fit_prompt(p, range(1, 17), restarts=8, steps=300)
            lo = min(best.values())
            sz = f"d={d} seed={seed}"
            row("Wang: certificate bound (any prompt)", sz, cert["bound"], "> 0", cert["bound"] > 0)
            row("Wang: best prompt MSE, m_p=1..16", sz + f" (m_p=1: {best[1]:.3g})", lo,
                f">= bound {cert['bound']:.3g}", lo >= cert["bound"])
            rel = W.relaxed_optimum(p)
            row("Wang: relaxed (d+1)-number optimum", sz, rel, "~ best prompt", lo <= 1.5 * rel + 1e-6)
            pc = W.fit_prompt(p, [2], restarts=8, steps=300, targets=W.hidden_prompt_targets(p))[2]
            row("Wang: positive control (hidden prompt)", sz, pc, "< 1e-8", pc < 1e-8)
            l1, l2 = W.fit_lora(p, 1), W.fit_lora(p, 2)
            row("Wang: LoRA rank 1 on W2", sz, l1, "> 1e-8 (cannot)", l1 > 1e-8)
            row("Wang: LoRA rank 2 on W2", sz, l2, "< 1e-8", l2 < 1e-8)
            ff = W.fit_full(p)
            row("Wang: full fine-tuning", sz, ff, "< 1e-8", ff < 1e-8)


def wang_scan_checks(seed: int = 0):
    """E3 (parameters vs examples, K = 1..4) and E4 (two inputs, same output, with and without the
    invertibility conditions). About 1.5 min on 2 CPU cores."""
    S = theory.wang_scan
    for rw in S.param_scan(d=2, r=8, Ks=(1, 2, 3, 4), max_len=8, seed=seed):
        K, t, mp, rk = rw["K"], rw["targets"], rw["min_prompt_len"], rw["min_lora_rank"]
        sz = f"d=2 r=8 K={K} {t} m_p<=8"
        best = min(rw["prompt_mse"].values())
        meas = f"m_p={mp} ({rw['prompt_params']}p)" if mp else f"none (best {best:.2g})"
        if t == "reachable":
            row("Wang E3: min prompt length = K", sz, meas, f"m_p = K = {K}", mp == K)
        else:
            row("Wang E3: min prompt length, random targets", sz, meas, "reported (>= K)", mp is None or mp >= K)
        row("Wang E3: min LoRA rank on W2", f"d=2 r=8 K={K} {t}", f"rank={rk} ({rw['lora_params']}p)",
            f"= min(K, d) = {min(K, 2)}", rk == min(K, 2))
    inv = S.two_inputs(d=3, r=8, seed=seed)
    sz = "2 layers d=3 r=8 m_p in 1,2,4,8"
    row("Wang E4: certificate, invertible layers", sz, inv["cert"]["bound"], "> 0", inv["cert"]["bound"] > 0)
    row("Wang E4: best prompt, same output", sz, inv["best_prompt"], f">= bound {inv['cert']['bound']:.3g}",
        inv["best_prompt"] >= inv["cert"]["bound"])
    row("Wang E4: x_1 alone (hidden prompt)", "2 layers d=3 m_p=2", inv["x1_alone_len2"], "< 1e-8",
        inv["x1_alone_len2"] < 1e-8)
    row("Wang E4: LoRA rank 2 on W2 (both layers)", "2 layers d=3 r=8", inv["lora2_proj"], "< 1e-8",
        inv["lora2_proj"] < 1e-8)
    row("Wang E4: full fine-tuning", "2 layers d=3 r=8", inv["full"], "< 1e-8", inv["full"] < 1e-8)
    col = S.two_inputs(d=3, r=8, seed=seed, collapse=True)
    row("Wang E4 control: collapsing MLP, prompt", sz + " L1=1", col["best_prompt"],
        f"<< invertible {inv['best_prompt']:.3g} (x0.1)", col["best_prompt"] < 0.1 * inv["best_prompt"])


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("identities", help="prefix attention identities on a model preset (random weights)")
    a.add_argument("--model-dir", required=True,
                   help=f"preset name ({', '.join(PRESETS)}); checkpoint directories are not supported yet")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="write the table as JSON to this path")
    b = sub.add_parser("all", help="identities, constructions, limits, capacity and Wang's limitation")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", help="write the table as JSON to this path")
    c = sub.add_parser("wang-scan", help="only Wang E3 (parameters vs examples) and E4 (two inputs, same output)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", help="write the table as JSON to this path")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        if args.cmd == "identities":
            if args.model_dir not in PRESETS:
                raise ValueError(f"unknown preset {args.model_dir!r} (checkpoints not supported yet); "
                                 f"valid: {', '.join(PRESETS)}")
            identities(args.model_dir, args.seed)
        elif args.cmd == "wang-scan":
            wang_scan_checks(args.seed)
        else:
            identities("tiny", args.seed)
            constructions(args.seed)
            capacity(args.seed)
            wang_checks()
            wang_scan_checks(args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.time() - t0
    n_fail = sum(not r["holds"] for r in ROWS)
    print(f"{len(ROWS)} checks, {n_fail} failing, {wall:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "wall_s": wall, "rows": ROWS}, f, indent=1)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
