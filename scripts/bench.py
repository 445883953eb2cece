#!/usr/bin/env python
"""Speed benchmark: prints figures and writes them as JSON (a benchmark, never a timed test).

Measures, in one run on this machine:
  - the CPU's matrix features (AMX, AVX-512 BF16, AVX2...), the dense f32 matmul peak through XLA, and the
    rate of each step's own matmul shapes in float32 and bfloat16: the limit a step is measured against;
  - pretraining steps/s, achieved GFLOP/s and their fraction of that limit for paper-exp1 and paper-exp3 at
    batch 64 (one run, dropout on), in float32 and with bfloat16 matmuls, back to back, --rounds times;
  - the time to evaluate 3,200 test samples on paper-exp3 (greedy decoding with a kv cache), in both dtypes;
  - K = 1, 8, 64 prefix-tuning runs over one frozen paper-exp1 base in one compiled program: run-steps/s and
    the ratio of the program's time to K sequential single runs (measured as K x one run), for the default
    schedule (on CPU, CPU_RUN_BATCH runs side by side) and the alternatives: one at a time, all vmapped;
  - 1, 2, 3 training programs at once in threads (small-exp3, 3 seeds each): seed-steps/s and the ratio to one,
    the measurement behind the reproduction's two lanes on a CPU;
  - where a paper-exp3 step's time goes, by op class, from the JAX profiler (part profile, both dtypes).
Compilation is excluded from every timing (a warm-up chunk runs first). Since the machine's speed drifts,
--reference-python (an interpreter with PyTorch) runs the reference step (scripts/bench_reference.py: minGPT's
model and trainer step, f32 as published and under bf16 autocast, and its cache-less greedy decoding) before
every round of our pretraining figures and once after the last, so every ratio is taken against the reference
measured right beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402

from prefixlab.benchmark import (MATRIX_FEATURES, REFERENCE, BenchmarkError, bench_eval, bench_lanes,  # noqa: E402
                                 bench_prefix_runs, bench_pretrain, cpu_features, cpu_model, matmul_peak,
                                 matmul_peak_at_shapes, same_day_reference)
from prefixlab.step_profile import format_profile, profile_step  # noqa: E402
from prefixlab.cli import OneLineParser  # noqa: E402
from prefixlab.run_dir import output_file_problem  # noqa: E402

PARTS = {"pretrain", "eval", "runs", "lanes", "profile"}
DTYPES = ("float32", "bfloat16")  # compute dtypes, measured back to back


def main(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=500, help="timed steps per measurement (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=100, help="steps per compiled chunk (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=3200)
    p.add_argument("--ks", default="1,8,64", help="numbers of vmapped prefix runs (default: %(default)s)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: pretrain,eval,runs,lanes,profile")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the pretraining figures (and of the "
                   "reference, with --reference-python) (default: %(default)s)")
    p.add_argument("--profile-steps", type=int, default=10, help="steps of paper-exp3 traced by the profiler "
                   "(part profile) (default: %(default)s)")
    p.add_argument("--out", default="runs/bench.json", help="JSON output (default: %(default)s)")
    p.add_argument("--reference-python", metavar="PYTHON", help="an interpreter with PyTorch: time the reference "
                   "step right before and after the pretraining figures and give same-day ratios too")
    a = p.parse_args(argv)
    if a.steps < 1 or a.chunk < 1 or a.steps % a.chunk:
        p.exit(2, "bench.py: error: --steps must be a positive multiple of --chunk\n")
    if a.rounds < 1 or a.profile_steps < 1:
        p.exit(2, "bench.py: error: --rounds and --profile-steps must be >= 1\n")
    if a.reference_python and not shutil.which(a.reference_python):
        p.exit(2, f"bench.py: error: --reference-python {a.reference_python}: no such interpreter\n")
    skip = set(a.skip.split(",")) - {""}
    problem = (output_file_problem(a.out) or (f"--skip: unknown part(s) {sorted(skip - PARTS)}" if skip - PARTS else None)
               or (None if all(k.strip().isdigit() and int(k) > 0 for k in a.ks.split(",")) else
                   f"--ks must be a comma list of positive integers, got {a.ks!r}")
               or (None if a.eval_samples > 0 else f"--eval-samples must be >= 1, got {a.eval_samples}"))
    if problem:  # before minutes of measuring
        p.exit(2, f"bench.py: error: {problem}\n")
    dev = jax.devices()[0]
    res = {"machine": {"platform": dev.platform, "device": str(dev.device_kind), "devices": jax.device_count(),
                       "cpu": cpu_model(), "cpu_features": cpu_features(), "jax": jax.__version__},
           "reference": REFERENCE}
    print(f"machine: {res['machine']['cpu']} ({dev.platform}); matrix features: "
          f"{', '.join(res['machine']['cpu_features']) or 'none of ' + ', '.join(MATRIX_FEATURES)}")
    ref_runs = []
    if a.reference_python and "pretrain" not in skip:  # first, so a reference that cannot run fails fast
        ref_runs.append(same_day_reference(a.reference_python, a.steps,
                                           eval_samples=0 if "eval" in skip else a.eval_samples))
    res["matmul_peak_gflops"] = matmul_peak()
    print(f"dense f32 matmul peak: {res['matmul_peak_gflops']:.0f} GFLOP/s ({dev.platform}, {dev.device_kind})")
    res["matmul_peak_at_shapes"] = {}
    for name in ("paper-exp1", "paper-exp3"):
        for dtype in DTYPES:
            r = res["matmul_peak_at_shapes"][f"{name}/{dtype}"] = matmul_peak_at_shapes(name, dtype)
            print(f"  {name} {dtype} at the step's own matmul shapes: {r['gflops']:.0f} GFLOP/s "
                  f"({', '.join(f'{m}x{k}x{n} {g:.0f}' for m, k, n, g in r['shapes'])})", flush=True)
    if "pretrain" not in skip:
        res["pretrain"] = []
        for rnd in range(a.rounds):
            if a.reference_python and rnd:  # brackets every round: before it, and once more after the last
                ref_runs.append(same_day_reference(a.reference_python, a.steps))
            for name in ("paper-exp1", "paper-exp3"):
                steps = a.steps if name == "paper-exp1" else max(a.chunk, a.steps // 5 // a.chunk * a.chunk)
                for dtype in DTYPES:
                    r = bench_pretrain(name, steps, a.chunk, None if dtype == "float32" else dtype)
                    shape_peak = res["matmul_peak_at_shapes"][f"{name}/{dtype}"]["gflops"]
                    r.update(round=rnd, speedup_vs_reference=REFERENCE[f"{name}_ms_per_step"] / r["ms_per_step"],
                             fraction_of_matmul_peak=r["achieved_gflops"] / res["matmul_peak_gflops"],
                             fraction_of_shape_peak=r["achieved_gflops"] / shape_peak,
                             matmul_floor_ms=1e3 * r["model_gflop_per_step"] / shape_peak)
                    res["pretrain"].append(r)
                    print(f"pretrain {name} {dtype} (round {rnd + 1}): {r['ms_per_step']:.2f} ms/step "
                          f"({r['steps_per_s']:.1f} steps/s), {r['achieved_gflops']:.0f} GFLOP/s = "
                          f"{100 * r['fraction_of_shape_peak']:.0f} % of its matmuls' rate in {dtype} "
                          f"(floor {r['matmul_floor_ms']:.1f} ms/step)", flush=True)
                f32, bf16 = res["pretrain"][-2:]
                print(f"  {name}: the bfloat16 step is {f32['ms_per_step'] / bf16['ms_per_step']:.2f}x as fast as "
                      f"float32")
        if ref_runs:
            ref_runs.append(same_day_reference(a.reference_python, a.steps))
            res["reference_same_day"] = ref_runs
            for r in res["pretrain"]:  # each row against the reference runs right before and after its round
                tag = "" if r["compute_dtype"] == "float32" else f"@{r['compute_dtype']}"
                ref_ms = [run["ms_per_step"][r["model"] + tag] for run in ref_runs[r["round"]:r["round"] + 2]]
                r["same_day_reference_ms"] = sum(ref_ms) / 2
                r["speedup_vs_same_day_reference"] = r["same_day_reference_ms"] / r["ms_per_step"]
                print(f"  {r['model']} {r['compute_dtype']} (round {r['round'] + 1}): the reference step "
                      f"({'f32' if not tag else 'bf16 autocast'}) measured {ref_ms[0]:.2f} ms before and "
                      f"{ref_ms[1]:.2f} ms after: {r['speedup_vs_same_day_reference']:.2f}x its steps/s", flush=True)
    if "eval" not in skip:
        res["eval"] = []
        for dtype in DTYPES:
            r = bench_eval("paper-exp3", a.eval_samples, None if dtype == "float32" else dtype)
            r["speedup_vs_reference"] = REFERENCE["eval_3200_paper-exp3_s"] * a.eval_samples / 3200 / r["eval_s"]
            ref = res.get("reference_same_day", [{}])[0].get("eval_s", {})
            ref_key = "paper-exp3" + ("" if dtype == "float32" else f"@{dtype}")
            if ref_key in ref:
                r["same_day_reference_s"] = ref[ref_key]
                r["speedup_vs_same_day_reference"] = ref[ref_key] / r["eval_s"]
            res["eval"].append(r)
            print(f"evaluate {a.eval_samples} samples on paper-exp3 {dtype}: {r['eval_s']:.2f} s (first call with "
                  f"compilation {r['first_call_s']:.1f} s), {r['speedup_vs_reference']:.0f}x the reference", flush=True)
    if "runs" not in skip:
        res["prefix_runs"] = bench_prefix_runs([int(k) for k in a.ks.split(",")], a.steps, a.chunk)
    if "profile" not in skip:
        res["profile"] = []
        for dtype in DTYPES:
            res["profile"].append(profile_step("paper-exp3", None if dtype == "float32" else dtype, a.profile_steps))
            print(format_profile(res["profile"][-1]), flush=True)
    if "lanes" not in skip:
        print("programs at once in threads (the reproduction's lanes):")
        res["lanes"] = bench_lanes(steps=a.steps, chunk=a.chunk)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as e:
        sys.exit(str(e))
