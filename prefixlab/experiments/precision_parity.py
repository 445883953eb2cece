"""Experiment 1 in float32 and with bfloat16 matmuls: the same verdicts, and each (task, method)'s bf16 mean loss and
accuracies inside the f32 seeds' 95 % interval. scripts/parity.py runs it at a profile's size; the tests at tiny size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefixlab.experiments import exp1
from prefixlab.results import mean_std_ci
from prefixlab.sweep import SweepConfig, run_sweep

FIELDS = ("final_loss", "token_accuracy", "exact_match")
DTYPES = ("float32", "bfloat16")


def compare(config: SweepConfig, out, slack: float = 0.0, log=print) -> dict:
    """Runs `config` in both compute dtypes into out/<dtype>. Returns {"verdicts": {dtype: [bool]}, "rows": [{task,
    method, field, f32_mean, f32_half, bf16_mean, inside}]}; `slack` widens the accuracies' intervals (seeds that tie
    give an interval of width 0)."""
    runs = {}
    for dtype in DTYPES:
        runs[dtype] = run_sweep(dataclasses.replace(config, compute_dtype=dtype), Path(out) / dtype, resume=False,
                                progress=False, log=lambda *a, **k: None)
        log(f"{dtype}: {len(runs[dtype])} records")
    # (the profile only names the protocol in the claims' text; the verdicts come from the records)
    verdicts = {dtype: [bool(c.verdict) for c in exp1.claims(recs, "tiny")] for dtype, recs in runs.items()}
    rows = []
    for task, method in sorted({(r["task"], r["method"]) for r in runs["float32"]}):
        for field in FIELDS:
            values = {d: [r[field] for r in recs if (r["task"], r["method"]) == (task, method)] for d, recs in runs.items()}
            m32, _, half = mean_std_ci(values["float32"])
            m16 = sum(values["bfloat16"]) / len(values["bfloat16"])
            allowed = half + (slack if field != "final_loss" else 0.0)
            rows.append(dict(task=task, method=method, field=field, f32_mean=m32, f32_half=half, bf16_mean=m16,
                             inside=bool(abs(m16 - m32) <= allowed)))
    return {"verdicts": verdicts, "rows": rows}


def agree(result: dict) -> bool:
    return result["verdicts"]["float32"] == result["verdicts"]["bfloat16"] and all(r["inside"] for r in result["rows"])
