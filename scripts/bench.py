#!/usr/bin/env python
"""Speed benchmark: prints figures and writes them as JSON (a benchmark, never a timed test).

Measures, in one run on this machine:
  - the dense f32 matmul peak through XLA (GFLOP/s), the yardstick for utilisation;
  - pretraining steps/s and achieved GFLOP/s for paper-exp1 and paper-exp3 at batch 64 (one run, dropout on);
  - the time to evaluate 3,200 test samples on paper-exp3 (greedy decoding with a kv cache);
  - K = 1, 8, 64 prefix-tuning runs over one frozen paper-exp1 base in one compiled program: run-steps/s and
    the ratio of the program's time to K sequential single runs (measured as K x one run), for the default
    schedule (on CPU, CPU_RUN_BATCH runs side by side) and the alternatives: one at a time, all vmapped.
Compilation is excluded from every timing (a warm-up chunk runs first). The reference PyTorch code on the
2-core machine: 16 ms/step (paper-exp1), 273 ms/step (4-layer), 34 s to evaluate 3,200 samples. Since the
machine's speed drifts between days, --reference-python times the reference step (scripts/bench_reference.py,
needs PyTorch in that interpreter) right before and after the pretraining figures, for same-day ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from prefixlab import tasks as T  # noqa: E402
from prefixlab.config import preset  # noqa: E402
from prefixlab.evaluate import base_builder, make_evaluator  # noqa: E402
from prefixlab.methods import Prefix  # noqa: E402
from prefixlab.train import (OptimConfig, default_run_batch, init_params, lm_loss, make_optimizer,  # noqa: E402
                             model_flops_per_step, run_keys, run_training)
from prefixlab.tune import RunSpec, _run_data  # noqa: E402

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


def timed_training(loss_fn, trainable_R, frozen, run_data_R, key_R, steps, chunk, run_batch=None):
    """Seconds for `steps` steps, not counting a first chunk that compiles the program."""
    lr_R = jnp.full((key_R.shape[0],), 5e-4)
    times = []
    run_training(loss_fn, trainable_R, frozen, run_data_R, lr_R, make_optimizer(OptimConfig()), key_R,
                 steps + chunk, chunk, progress=False, chunk_times=times, run_batch=run_batch)
    return sum(times[1:])


def bench_pretrain(name, steps, chunk):
    cfg = preset(name)
    mix = T.parse_mixture("sort_asc")
    graphdef, params_R = init_params(cfg, run_keys([0]))

    def loss_fn(params, _f, _rd, key):
        k_data, k_drop = jax.random.split(key)
        return lm_loss(nnx.merge(graphdef, params), mix.batch(k_data, 64), None, k_drop)

    wall = timed_training(loss_fn, params_R, None, None, run_keys([1]), steps, chunk)
    flops = model_flops_per_step(cfg, 64, SEQ, scored=SEQ - T.FIRST_TARGET)  # what lm_loss executes
    return {"model": name, "steps": steps, "ms_per_step": 1e3 * wall / steps, "steps_per_s": steps / wall,
            "model_gflop_per_step": flops / 1e9, "achieved_gflops": flops * steps / wall / 1e9}


def bench_eval(name, n):
    cfg = preset(name)
    graphdef, params_R = init_params(cfg, run_keys([0]))
    ev = make_evaluator(base_builder(graphdef), T.parse_mixture("sort_asc"), n)
    t = time.perf_counter()
    jax.block_until_ready(ev(params_R, None, None))
    compile_and_run = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(ev(params_R, None, None))
    return {"model": name, "samples": n, "eval_s": time.perf_counter() - t, "first_call_s": compile_and_run}


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


def same_day_reference(python: str, steps: int) -> dict:
    """ms/step of the reference's PyTorch step per model, from scripts/bench_reference.py run by `python`."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "reference.json"
        cmd = [python, str(Path(__file__).with_name("bench_reference.py")), "--steps", str(steps), "--out", str(out)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            sys.exit(f"bench.py: error: cannot run --reference-python {python}: {e.strerror}")
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            sys.exit(f"bench.py: error: the reference benchmark failed: {last}")
        return json.loads(out.read_text())["ms_per_step"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=500, help="timed steps per measurement (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=100, help="steps per compiled chunk (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=3200)
    p.add_argument("--ks", default="1,8,64", help="numbers of vmapped prefix runs (default: %(default)s)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: pretrain,eval,runs")
    p.add_argument("--out", default="runs/bench.json", help="JSON output (default: %(default)s)")
    p.add_argument("--reference-python", metavar="PYTHON", help="an interpreter with PyTorch: time the reference "
                   "step right before and after the pretraining figures and give same-day ratios too")
    a = p.parse_args(argv)
    if a.steps < 1 or a.chunk < 1 or a.steps % a.chunk:
        p.exit(2, "bench.py: error: --steps must be a positive multiple of --chunk\n")
    if a.reference_python and not shutil.which(a.reference_python):
        p.exit(2, f"bench.py: error: --reference-python {a.reference_python}: no such interpreter\n")
    skip = set(a.skip.split(",")) - {""}
    dev = jax.devices()[0]
    res = {"machine": {"platform": dev.platform, "device": str(dev.device_kind), "devices": jax.device_count(),
                       "cpu": platform.processor() or platform.machine(), "jax": jax.__version__},
           "reference": REFERENCE}
    res["matmul_peak_gflops"] = matmul_peak()
    print(f"dense f32 matmul peak: {res['matmul_peak_gflops']:.0f} GFLOP/s ({dev.platform}, {dev.device_kind})")
    if "pretrain" not in skip:
        res["pretrain"] = []
        ref_runs = [same_day_reference(a.reference_python, a.steps)] if a.reference_python else []
        for name in ("paper-exp1", "paper-exp3"):
            steps = a.steps if name == "paper-exp1" else max(a.chunk, a.steps // 5 // a.chunk * a.chunk)
            r = bench_pretrain(name, steps, a.chunk)
            r["speedup_vs_reference"] = REFERENCE[f"{name}_ms_per_step"] / r["ms_per_step"]
            r["fraction_of_matmul_peak"] = r["achieved_gflops"] / res["matmul_peak_gflops"]
            res["pretrain"].append(r)
            print(f"pretrain {name}: {r['ms_per_step']:.2f} ms/step ({r['steps_per_s']:.1f} steps/s), "
                  f"{r['achieved_gflops']:.0f} GFLOP/s = {100 * r['fraction_of_matmul_peak']:.0f} % of the matmul peak, "
                  f"{r['speedup_vs_reference']:.1f}x the reference's steps/s", flush=True)
        if ref_runs:
            ref_runs.append(same_day_reference(a.reference_python, a.steps))
            res["reference_same_day"] = {"before": ref_runs[0], "after": ref_runs[1]}
            for r in res["pretrain"]:
                ref_ms = [run[r["model"]] for run in ref_runs]
                r["same_day_reference_ms"] = sum(ref_ms) / 2
                r["speedup_vs_same_day_reference"] = r["same_day_reference_ms"] / r["ms_per_step"]
                print(f"  {r['model']}: the reference step measured {ref_ms[0]:.2f} ms before and {ref_ms[1]:.2f} ms "
                      f"after: {r['speedup_vs_same_day_reference']:.2f}x its steps/s", flush=True)
    if "eval" not in skip:
        r = bench_eval("paper-exp3", a.eval_samples)
        r["speedup_vs_reference"] = REFERENCE["eval_3200_paper-exp3_s"] * a.eval_samples / 3200 / r["eval_s"]
        res["eval"] = r
        print(f"evaluate {a.eval_samples} samples on paper-exp3: {r['eval_s']:.2f} s "
              f"(first call with compilation {r['first_call_s']:.1f} s), {r['speedup_vs_reference']:.0f}x the reference",
              flush=True)
    if "runs" not in skip:
        res["prefix_runs"] = bench_prefix_runs([int(k) for k in a.ks.split(",")], a.steps, a.chunk)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
