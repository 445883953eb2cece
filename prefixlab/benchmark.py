"""Speed measurements behind scripts/bench.py: matmul peak, pretraining and tuning throughput, evaluation time.
Figures to read, never asserted in tests; compilation is excluded from every timing (a warm-up chunk runs first)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.evaluate import base_builder, make_evaluator
from prefixlab.methods import Prefix
from prefixlab.run_layout import default_run_batch
from prefixlab.train import (OptimConfig, init_params, lm_loss, make_optimizer, model_flops_per_step, run_keys,
                             run_training)
from prefixlab.tune import RunSpec, _run_data

class BenchmarkError(RuntimeError):
    """The reference benchmark could not run; the message is the one line to show."""


REFERENCE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_reference.py"

REFERENCE = {"paper-exp1_ms_per_step": 16.0, "paper-exp3_ms_per_step": 273.0, "eval_3200_paper-exp3_s": 34.0}
SEQ = 19


def matmul_peak(sizes=(1024, 2048, 4096), reps=5):
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        f = jax.jit(lambda x: x @ x)
        f(a).block_until_ready()
        t = time.perf_counter()
        for _ in range(reps):
            f(a).block_until_ready()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def _matmul_rate(M, K, N, dtype, reps=5, rounds=3):
    """GFLOP/s of one jitted (M, K) @ (K, N) product with f32 accumulation, best of `rounds`."""
    a, b = jnp.ones((M, K), dtype), jnp.ones((K, N), dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            f(a, b).block_until_ready()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * M * K * N / best / 1e9


def matmul_peak_at_shapes(name, dtype="float32", batch=64, seq=SEQ):
    """The rate the step's Linear matmuls could reach: each forward shape of a block ((B*S, D) times qkv, o, fc,
    proj) timed alone in `dtype`, combined as the FLOP-weighted harmonic mean (= total FLOPs / total time).
    Returns {"gflops": that rate, "shapes": [[M, K, N, GFLOP/s], ...]}."""
    cfg = preset(name)
    M, D = batch * seq, cfg.d_model
    widths = (D, *cfg.hidden, D)
    shapes = [(M, D, 3 * cfg.n_head * cfg.hd), (M, cfg.n_head * cfg.hd, D), *((M, a, b) for a, b in zip(widths[:-1], widths[1:]))]
    rates = [_matmul_rate(*s, jnp.dtype(dtype)) for s in shapes]
    flops = [2 * m * k * n for m, k, n in shapes]
    return {"gflops": sum(flops) / sum(f / r for f, r in zip(flops, rates)),
            "shapes": [[*s, round(r, 1)] for s, r in zip(shapes, rates)]}


def timed_training(loss_fn, trainable_R, frozen, run_data_R, key_R, steps, chunk, run_batch=None):
    """Seconds for `steps` steps, not counting a first chunk that compiles the program."""
    lr_R = jnp.full((key_R.shape[0],), 5e-4)
    times = []
    run_training(loss_fn, trainable_R, frozen, run_data_R, lr_R, make_optimizer(OptimConfig()), key_R,
                 steps + chunk, chunk, progress=False, chunk_times=times, run_batch=run_batch)
    return sum(times[1:])


def bench_pretrain(name, steps, chunk, compute_dtype=None):
    cfg = preset(name, compute_dtype=compute_dtype)
    mix = T.parse_mixture("sort_asc")
    graphdef, params_R = init_params(cfg, run_keys([0]))

    def loss_fn(params, _f, _rd, key):
        k_data, k_drop = jax.random.split(key)
        return lm_loss(nnx.merge(graphdef, params), mix.batch(k_data, 64), None, k_drop)

    wall = timed_training(loss_fn, params_R, None, None, run_keys([1]), steps, chunk)
    flops = model_flops_per_step(cfg, 64, SEQ, scored=SEQ - T.FIRST_TARGET)  # what lm_loss executes
    return {"model": name, "compute_dtype": cfg.compute_dtype or cfg.dtype, "steps": steps, "ms_per_step": 1e3 * wall / steps, "steps_per_s": steps / wall,
            "model_gflop_per_step": flops / 1e9, "achieved_gflops": flops * steps / wall / 1e9}


def bench_eval(name, n, compute_dtype=None):
    cfg = preset(name, compute_dtype=compute_dtype)
    graphdef, params_R = init_params(cfg, run_keys([0]))
    ev = make_evaluator(base_builder(graphdef), T.parse_mixture("sort_asc"), n)
    t = time.perf_counter()
    jax.block_until_ready(ev(params_R, None, None))
    compile_and_run = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(ev(params_R, None, None))
    return {"model": name, "compute_dtype": cfg.compute_dtype or cfg.dtype, "samples": n, "eval_s": time.perf_counter() - t, "first_call_s": compile_and_run}


def bench_prefix_runs(ks, steps, chunk, P=1):
    """K prefix runs sharing one frozen base, one program; vs K x the single-run time."""
    cfg = preset("paper-exp1", dropout=0.0)
    graphdef, params_R = init_params(cfg, run_keys([0]))
    base = jax.tree.map(lambda x: x[0], params_R)
    method, task = Prefix(), T.parse_mixture("sort_desc")

    def loss_fn(tr, frozen, rd, key):
        model, ctx = method.build(graphdef, tr, frozen, rd, cfg)
        return lm_loss(model, task.batch(key, 64), ctx, None)

    def run(K, run_batch=None):
        keys = run_keys(list(range(K)))
        tr_R = jax.vmap(lambda k: method.init(k, cfg, base, P))(keys)
        return timed_training(loss_fn, tr_R, base, _run_data([RunSpec(P, 5e-4)] * K, P), keys, steps, chunk, run_batch)

    rows = []
    # default: CPU_RUN_BATCH runs side by side on CPU, all of them elsewhere; then the alternatives it was chosen over
    default = default_run_batch(shares_base=True)
    modes = {"default": default}
    for mode, run_batch in (("one-at-a-time", 1), ("vmap-all", 0)):
        if run_batch != default:
            modes[mode] = run_batch
    single = run(1)
    for K in ks:
        for mode, run_batch in modes.items():
            if K == 1 and mode != "default":
                continue
            wall = single if K == 1 else run(K, run_batch)
            # the machine's speed drifts (DESIGN.md): a single run timed right before and right after the program
            # gives the K-sequential estimate, so a linear drift cancels out of the ratio
            after = run(1) if K > 1 else single
            row = {"K": K, "mode": mode, "run_batch": run_batch, "steps": steps, "wall_s": wall,
                   "run_steps_per_s": K * steps / wall,
                   "single_run_s": (single + after) / 2, "program_over_sequential": wall / (K * (single + after) / 2)}
            single = after
            rows.append(row)
            print(f"  prefix runs K={K:3d} {mode:<13}: {row['run_steps_per_s']:8.0f} run-steps/s, one program's time "
                  f"/ K single runs = {row['program_over_sequential']:.2f}", flush=True)
    return rows


def bench_lanes(lanes=(1, 2, 3), steps=500, chunk=250, name="small-exp3", seeds=3):
    """L programs at once in threads of this process (what the reproduction's lanes do), each pretraining `seeds`
    bases of `name` on the mixture sort_asc,sort_desc,add1,add2: seed-steps/s over all of them, and the ratio to one
    program. Each thread's own compilation is excluded; the other threads' may overlap its first timed chunk."""
    mix = T.parse_mixture("sort_asc,sort_desc,add1,add2")
    cfg = preset(name)

    def one(i, walls):
        graphdef, params_R = init_params(cfg, run_keys(list(range(seeds))))

        def loss_fn(params, _f, _rd, key):
            k_data, k_drop = jax.random.split(key)
            return lm_loss(nnx.merge(graphdef, params), mix.batch(k_data, 64), None, k_drop)

        walls[i] = timed_training(loss_fn, params_R, None, None, run_keys([100 + s for s in range(seeds)]), steps,
                                  chunk)

    rows = []
    for L in lanes:
        walls = {}
        threads = [threading.Thread(target=one, args=(i, walls)) for i in range(L)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = sum(seeds * steps / w for w in walls.values())
        rows.append({"lanes": L, "model": name, "seeds": seeds, "steps": steps, "seed_steps_per_s": rate,
                     "over_one_lane": rate / rows[0]["seed_steps_per_s"] if rows else 1.0})
        print(f"  {L} program(s) at once ({name}, {seeds} seeds each): {rate:.1f} seed-steps/s, "
              f"{rows[-1]['over_one_lane']:.2f}x one", flush=True)
    return rows


def same_day_reference(python: str, steps: int, eval_samples: int = 0) -> dict:
    """The reference's PyTorch figures from scripts/bench_reference.py run by `python`: {"ms_per_step": {model:
    ms, model@bfloat16: ms under bf16 autocast}, "eval_s": {...} when eval_samples}."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "reference.json"
        cmd = [python, str(REFERENCE_SCRIPT), "--steps", str(steps), "--dtypes", "float32,bfloat16",
               "--eval-samples", str(eval_samples), "--out", str(out)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise BenchmarkError(f"bench.py: error: cannot run --reference-python {python}: {e.strerror}") from None
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise BenchmarkError(f"bench.py: error: the reference benchmark failed: {last}")
        return json.loads(out.read_text())


MATRIX_FEATURES = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "fma")


def cpu_features(path="/proc/cpuinfo") -> list[str]:
    """Which of MATRIX_FEATURES the CPU reports (decides whether bf16 matmuls can beat f32 on a CPU)."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in open(path) if ln.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in MATRIX_FEATURES if f in flags]


def cpu_model(path="/proc/cpuinfo") -> str:
    import platform

    try:
        return next((ln.split(":", 1)[1].strip() for ln in open(path) if ln.startswith("model name")), "")
    except OSError:
        return platform.processor() or platform.machine()
