"""Result records: JSON lines written one whole line at a time, CSV, and a grouped summary table."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

GROUP_KEYS = ("task", "method", "context_len", "lora_rank", "lora_targets")


def append_jsonl(path: Path, record: dict) -> None:
    """Appends one record as a single write + fsync, so a kill leaves no torn line behind."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_csv(path: Path, records: list[dict]) -> None:
    fields = sorted({k for r in records for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(records)


def _mean_std(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def summarize(records: list[dict]) -> list[dict]:
    """One row per task x method x context length x LoRA rank x lr: mean and std over seeds."""
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in (*GROUP_KEYS, "lr"))].append(r)
    rows = []
    for key, rs in groups.items():
        em, em_sd = _mean_std([r["exact_match"] for r in rs])
        ta, ta_sd = _mean_std([r["token_accuracy"] for r in rs])
        row = dict(zip(GROUP_KEYS, key[:-1]), lr=key[-1], n_seeds=len(rs), exact_match=em, exact_match_std=em_sd,
                   token_accuracy=ta, token_accuracy_std=ta_sd, trainable_params=rs[0]["trainable_params"],
                   steps=rs[0].get("steps"))
        rows.append(row)
    return rows


def _label(row) -> str:
    return row["method"] + (f":{row['lora_targets']}" if row.get("lora_targets") else "")


def format_table(records: list[dict]) -> str:
    rows = summarize(records)
    header = f"{'task':<16} {'method':<22} {'len':>4} {'rank':>4} {'lr':>8} {'params':>9} {'steps':>6} " \
             f"{'exact match %':>15} {'token acc %':>13}  seeds"
    lines = [header, "-" * len(header)]
    for r in rows:
        fmt = lambda v: "-" if v is None else str(v)
        lr = f"{r['lr']:.0e}" if r["lr"] else "-"
        lines.append(
            f"{r['task']:<16} {_label(r):<22} {fmt(r['context_len']):>4} {fmt(r['lora_rank']):>4} {lr:>8} "
            f"{r['trainable_params']:>9,} {fmt(r['steps']):>6} "
            f"{100 * r['exact_match']:>7.1f} ± {100 * r['exact_match_std']:<5.1f} "
            f"{100 * r['token_accuracy']:>6.1f} ± {100 * r['token_accuracy_std']:<4.1f}  {r['n_seeds']}"
        )
    return "\n".join(lines)
