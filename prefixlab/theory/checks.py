"""The verification table of prefixlab.theory: identities, constructions, capacity and Wang's limitation, each check a
Claim (statement, measured error/loss/count, threshold as reference, holds as verdict, sizes as protocol).

    with float64():
        claims = run_part("all", log=print)

The checks need float64 (the float64 rows, and Wang's fits to 1e-8): run them inside `float64()`, which enables it for
the calling thread only, so they can run in the same process as float32 training, even beside it in another thread
(the reproduction does)."""

from __future__ import annotations

import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab import theory
from prefixlab.claim import Claim
from prefixlab.config import PRESETS, preset
from prefixlab.decode import greedy_generate
from prefixlab.model import Transformer

PARTS = ("identities", "all", "wang-scan")


def float64():
    """Enables jax float64 for the block in this thread only (jax's thread-local setting): training in other
    threads keeps float32."""
    return jax.enable_x64(True)


def row(claim, sizes, measured, threshold, holds) -> Claim:
    return Claim(claim, measured, threshold, bool(holds), sizes)


def format_row(c: Claim) -> str:
    m = f"{c.measured:.3g}" if isinstance(c.measured, float) else str(c.measured)
    return f"{'holds' if c.verdict else 'FAILS':5}  {c.statement:42} {c.protocol:34} {m:>12}  {c.reference}"


def identities(name: str, seed: int = 0) -> Iterator[Claim]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (checkpoints not supported yet); valid: {', '.join(PRESETS)}")
    for dtype, tol in (("float64", 1e-10), ("float32", 1e-5)):
        cfg = preset(name, dropout=0.0, dtype=dtype)
        model = theory.randomize_params(Transformer(cfg, rngs=nnx.Rngs(seed)), jax.random.key(seed), 0.3)
        toks = jax.random.randint(jax.random.key(seed + 1), (4, cfg.block_size), 0, cfg.vocab_size)
        for form in ("layer_inputs", "kv"):
            ctx = theory.random_context(cfg, jax.random.key(seed + 2), 4, form)
            s = theory.identity_summary(theory.attention_identities(model, toks, ctx))
            sz = f"{name} {dtype} {form} P=4"
            yield row("attention rescaling A^pt=A(1-mass)", sz, s["rescale_err"], f"<= {tol}", s["rescale_err"] <= tol)
            yield row("output decomposition t^pt", sz, s["output_err"], f"<= {tol}", s["output_err"] <= tol)


def _exact(pred, want):
    return float((np.asarray(pred) != np.asarray(want)).mean())


def constructions(seed: int = 0) -> Iterator[Claim]:
    g = np.random.default_rng(seed)
    for V, N, dtype in ((94, 20, "float32"), (94, 20, "float64"), (1000, 200, "float32"), (20000, 100, "float64")):
        Y = g.integers(0, V, N)
        model, ctx = theory.unconditional(Y, V, dtype=dtype)
        err = _exact(greedy_generate(model, jnp.zeros((1, 1), jnp.int32), N, ctx)[0], Y)
        yield row("Thm1 unconditional, 1 virtual token", f"V={V} N={N} {dtype}", err, "token error 0", err == 0)
    for V, dtype in ((94, "float32"), (200, "float64")):
        m = g.integers(0, V, V)
        model, ctx = theory.conditional(m, V, dtype=dtype)
        err = _exact(greedy_generate(model, jnp.arange(V)[:, None], 1, ctx)[:, 0], m)
        yield row("Thm2 conditional x -> m(x)", f"V={V} all x {dtype}", err, "token error 0", err == 0)
    V, N0 = 50, 10
    M = g.integers(0, V, (V, N0))
    model, ctx = theory.responses(M, V)
    err = _exact(greedy_generate(model, jnp.arange(V)[:, None], N0, ctx), M)
    yield row("responses, N0 virtual tokens", f"V={V} N0={N0} float64", err, "token error 0", err == 0)
    for dtype in ("float32", "float64"):
        V = theory.max_vocab_two_token(dtype)
        M = g.integers(0, V, (V, V))
        model, ctx = theory.two_token(M, V, dtype=dtype)
        pairs = jnp.stack(jnp.meshgrid(jnp.arange(V), jnp.arange(V), indexing="ij"), -1).reshape(-1, 2)
        err = _exact(greedy_generate(model, pairs, 1, ctx)[:, 0], M.reshape(-1))
        yield row("two-token (2 layers, in-network unpack)", f"V={V} all pairs {dtype}", err, "token error 0", err == 0)
    for dtype in ("float32", "float64"):
        yield row("guaranteed max V, decoder (1/V^2 >= 8u)", dtype, theory.max_vocab_decoder(dtype), "formula", True)
        yield row("guaranteed max V, two-token packing", dtype, theory.max_vocab_two_token(dtype), "formula", True)
    lim = theory.measured_decoder_limit("float32", range(2000, 3201, 200))
    yield row("measured decoder limit float32", "largest exact / smallest failing", f"{lim['largest_exact']}/"
              f"{lim['smallest_failing']}", f">= guaranteed {lim['guaranteed']}", lim["largest_exact"] >= lim["guaranteed"])


def capacity(seed: int = 0) -> Iterator[Claim]:
    model = Transformer(preset("tiny", dropout=0.0, vocab_size=10, block_size=12), rngs=nnx.Rngs(seed))
    theory.randomize_params(model, jax.random.key(seed + 1), 0.3)
    r = theory.capacity_count(model, jax.random.key(seed), n_virtual=8192, n_new=8)
    yield row("capacity: distinct completions, hard", "tiny (random) V=10 n_new=8", r["distinct_hard"], "<= V",
              r["distinct_hard"] <= 10)
    yield row("capacity: distinct completions, virtual", f"{r['n_virtual']} sampled", r["distinct_virtual"], "> V",
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
    yield row("capacity: distinct completions, hard", sizes, r["distinct_hard"], "<= V", r["distinct_hard"] <= 10)
    yield row("capacity: distinct completions, virtual", f"{r['n_virtual']} sampled", r["distinct_virtual"], "> V",
              r["distinct_virtual"] > 10)


def wang_checks(seeds=(0, 1), dims=(2, 4, 8)) -> Iterator[Claim]:
    W = theory.wang
    for d in dims:
        for seed in seeds:
            p = W.make_problem(d, seed)
            cert = W.certificate(p)
            best = W.scan_prompt_lengths(p, restarts=8, steps=300)
            lo, top = min(best.values()), max(best)
            sz = f"d={d} seed={seed}"
            yield row("Wang: certificate bound (any prompt)", sz, cert["bound"], "> 0", cert["bound"] > 0)
            yield row("Wang: best prompt MSE, m_p=1..16, then doubling while it falls (≤ 128)",
                      sz + f" (m_p=1: {best[1]:.3g}; m_p={top}: {best[top]:.3g})", lo,
                      f">= bound {cert['bound']:.3g}", lo >= cert["bound"])
            rel = W.relaxed_optimum(p)
            yield row("Wang: relaxed (d+1)-number optimum", sz, rel, "~ best prompt", lo <= 1.5 * rel + 1e-6)
            pc = W.fit_prompt(p, [2], restarts=8, steps=300, targets=W.hidden_prompt_targets(p))[2]
            yield row("Wang: positive control (hidden prompt)", sz, pc, "< 1e-8", pc < 1e-8)
            l1, l2 = W.fit_lora(p, 1), W.fit_lora(p, 2)
            yield row("Wang: LoRA rank 1 on W2", sz, l1, "> 1e-8 (cannot)", l1 > 1e-8)
            yield row("Wang: LoRA rank 2 on W2", sz, l2, "< 1e-8", l2 < 1e-8)
            ff = W.fit_full(p)
            yield row("Wang: full fine-tuning", sz, ff, "< 1e-8", ff < 1e-8)


def wang_scan_checks(seed: int = 0) -> Iterator[Claim]:
    """E3 (parameters vs examples, K = 1..4) and E4 (two inputs, same output, with and without the
    invertibility conditions). About 1.5 min on 2 CPU cores."""
    S = theory.wang_scan
    for rw in S.param_scan(d=2, r=8, Ks=(1, 2, 3, 4), max_len=8, seed=seed):
        K, t, mp, rk = rw["K"], rw["targets"], rw["min_prompt_len"], rw["min_lora_rank"]
        sz = f"d=2 r=8 K={K} {t} m_p<=8"
        best = min(rw["prompt_mse"].values())
        meas = f"m_p={mp} ({rw['prompt_params']}p)" if mp else f"none (best {best:.2g})"
        if t == "reachable":
            yield row("Wang E3: min prompt length = K", sz, meas, f"m_p = K = {K}", mp == K)
        else:
            yield row("Wang E3: min prompt length, random targets", sz, meas, "reported (>= K)", mp is None or mp >= K)
        yield row("Wang E3: min LoRA rank on W2", f"d=2 r=8 K={K} {t}", f"rank={rk} ({rw['lora_params']}p)",
                  f"= min(K, d) = {min(K, 2)}", rk == min(K, 2))
    inv = S.two_inputs(d=3, r=8, seed=seed)
    sz = "2 layers d=3 r=8 m_p in 1,2,4,8"
    yield row("Wang E4: certificate, invertible layers", sz, inv["cert"]["bound"], "> 0", inv["cert"]["bound"] > 0)
    yield row("Wang E4: best prompt, same output", sz, inv["best_prompt"], f">= bound {inv['cert']['bound']:.3g}",
              inv["best_prompt"] >= inv["cert"]["bound"])
    yield row("Wang E4: x_1 alone (hidden prompt)", "2 layers d=3 m_p=2", inv["x1_alone_len2"], "< 1e-8",
              inv["x1_alone_len2"] < 1e-8)
    yield row("Wang E4: LoRA rank 2 on W2 (both layers)", "2 layers d=3 r=8", inv["lora2_proj"], "< 1e-8",
              inv["lora2_proj"] < 1e-8)
    yield row("Wang E4: full fine-tuning", "2 layers d=3 r=8", inv["full"], "< 1e-8", inv["full"] < 1e-8)
    col = S.two_inputs(d=3, r=8, seed=seed, collapse=True)
    yield row("Wang E4 control: collapsing MLP, prompt", sz + " L1=1", col["best_prompt"],
              f"<< invertible {inv['best_prompt']:.3g} (x0.1)", col["best_prompt"] < 0.1 * inv["best_prompt"])


def part_checks(part: str, seed: int = 0, model: str = "tiny") -> Iterator[Claim]:
    """The checks of one part: "identities" (on preset `model`), "wang-scan", or "all"."""
    if part == "identities":
        yield from identities(model, seed)
    elif part == "wang-scan":
        yield from wang_scan_checks(seed)
    elif part == "all":
        yield from identities("tiny", seed)
        yield from constructions(seed)
        yield from capacity(seed)
        yield from wang_checks()
        yield from wang_scan_checks(seed)
    else:
        raise ValueError(f"unknown theory part {part!r}; valid: {', '.join(PARTS)}")


def run_part(part: str, seed: int = 0, model: str = "tiny", log=None) -> list[Claim]:
    """The claims of one part, each logged as a table line as soon as it is measured. Run inside float64()."""
    claims = []
    for c in part_checks(part, seed, model):
        claims.append(c)
        if log is not None:
            log(format_row(c), flush=True)
    return claims


def table_json(claims: list[Claim], command: str, wall_s: float) -> dict:
    """The --out JSON of scripts/theory.py."""
    return {"command": command, "wall_s": wall_s, "rows": [c.theory_row() for c in claims]}


def timed_part(part: str, command: str, seed: int = 0, model: str = "tiny", log=None) -> dict:
    """Runs one part under float64 and returns its table_json."""
    t0 = time.time()
    with float64():
        claims = run_part(part, seed, model, log)
    return table_json(claims, command, time.time() - t0)
