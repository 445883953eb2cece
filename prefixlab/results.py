"""Result records: JSON lines written one whole line at a time, CSV, and a grouped summary table."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

GROUP_KEYS = ("task", "method", "init", "context_len", "lora_rank", "lora_targets")


def append_jsonl(path: Path, records: dict | list[dict]) -> None:
    """Appends records (one line each) in a single write + fsync, so a kill leaves no torn group behind."""
    records = [records] if isinstance(records, dict) else records
    data = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# what summaries, tables and plots read from every record
REQUIRED_FIELDS = ("task", "method", "context_len", "lora_rank", "lr", "steps", "trainable_params", "exact_match",
                   "token_accuracy", "wall_s")


def check_records(records: list, path) -> None:
    """Raises ValueError naming the first line of `path` that is not a record object with REQUIRED_FIELDS."""
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise ValueError(f"{path}, line {i}: a {type(r).__name__}, not a record object")
        missing = [k for k in REQUIRED_FIELDS if k not in r]
        if missing:
            raise ValueError(f"{path}, line {i}: record without {', '.join(missing)}")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_jsonl_repairing(path: Path, log=print) -> list[dict]:
    """Reads the records; a torn last line (a kill inside a write) is cut off the file, with a message."""
    data = Path(path).read_bytes()
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    if tail.strip():
        try:
            json.loads(tail)
            keep = len(data)  # a whole last record without its newline
        except ValueError:
            log(f"{path}: removed a torn last line ({len(tail)} bytes) left by an interrupted write")
            with open(path, "r+b") as f:
                f.truncate(keep)
    return [json.loads(line) for line in data[:keep].decode().splitlines() if line.strip()]


def loss_curve(losses_U, points: int = 100) -> list[float]:
    """The training loss as at most `points` window means (what plots need; the full curve is in the checkpoint)."""
    losses_U = np.asarray(losses_U, np.float64)
    if losses_U.size == 0 or np.isnan(losses_U).all():
        return []
    windows = np.array_split(losses_U, min(points, losses_U.size))
    return [round(float(w.mean()), 6) if np.isfinite(w).all() else None for w in windows]


# results.csv: the same columns in the same order for every sweep (a field a record lacks is left empty), so
# sweeps concatenate and load alike; units are in the names. docs/reference/sweeps.md lists them.
CSV_COLUMNS = ("task", "method", "init", "context_len", "lora_rank", "lora_targets", "lora_scaling", "lr", "selected",
               "steps", "steps_used", "stop_reason", "seed", "status", "trainable_params", "exact_match_pct",
               "token_accuracy_pct", "cross_exact_match_pct", "val_exact_match_pct", "val_loss_nats",
               "final_loss_nats", "wall_s", "matched_prefix_len", "matched_prefix_params", "param_ratio", "group",
               "pretrain", "pretrain_steps", "model", "variant")
_PCT_FIELDS = {"exact_match_pct": "exact_match", "token_accuracy_pct": "token_accuracy",
               "val_exact_match_pct": "val_exact_match"}


def _pct_or_none(x):
    return None if x is None else round(100 * x, 6)


def _csv_row(record: dict) -> dict:
    """A record as CSV_COLUMNS: fractions become %, the cross-task scores one `task=%;task=%` cell (a column per
    task would change the header from sweep to sweep), loss curves stay in the JSON lines only."""
    row = {k: record.get(k) for k in CSV_COLUMNS}
    row.update({col: _pct_or_none(record.get(k)) for col, k in _PCT_FIELDS.items()})
    cross = record.get("cross_exact_match") or {}
    row["cross_exact_match_pct"] = ";".join(f"{t}={'' if v is None else _pct_or_none(v)}"
                                            for t, v in sorted(cross.items()))
    row["final_loss_nats"], row["val_loss_nats"] = record.get("final_loss"), record.get("val_loss")
    return row


def write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(_csv_row(r) for r in records)


# two-sided 95 % Student-t quantiles by degrees of freedom (no scipy for a dozen numbers)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    if dof < 1:
        return math.nan
    return _T95.get(dof) or next((v for k, v in sorted(_T95.items()) if k >= dof), 1.960)


def mean_std_ci(xs):
    """Mean, sample std and the half-width of the 95 % t-interval of the mean (nan for fewer than 2 values);
    None values (diverged runs) are left out."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, sd, t95(len(xs) - 1) * sd / math.sqrt(len(xs))


def summarize(records: list[dict]) -> list[dict]:
    """One row per task x method x context length x LoRA rank (x lr, for records from before learning rates were
    selected): mean, std and 95 % interval over seeds. Where runs carry `selected` (prefixlab/selection.py), only
    the selected ones count, and `lr` is the rate chosen, or a tuple of them where seeds chose differently."""
    chosen = any("selected" in r for r in records)
    records = [r for r in records if r.get("selected", True)]
    groups = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in GROUP_KEYS) + (() if chosen else (r.get("lr"),))].append(r)
    rows = []
    for key, rs in groups.items():
        em, em_sd, em_ci = mean_std_ci([r["exact_match"] for r in rs])
        ta, ta_sd, ta_ci = mean_std_ci([r["token_accuracy"] for r in rs])
        lrs = sorted({r.get("lr") for r in rs}, key=lambda v: v or 0.0)
        used = [r["steps_used"] for r in rs if r.get("steps_used") is not None]
        row = dict(zip(GROUP_KEYS, key[:len(GROUP_KEYS)]), lr=lrs[0] if len(lrs) == 1 else tuple(lrs),
                   lr_selected=chosen, steps_used=sum(used) / len(used) if used else None, n_seeds=len(rs),
                   n_diverged=sum(r.get("status") == "diverged" for r in rs),
                   exact_match=em, exact_match_std=em_sd, exact_match_ci95=em_ci,
                   token_accuracy=ta, token_accuracy_std=ta_sd, token_accuracy_ci95=ta_ci,
                   trainable_params=rs[0]["trainable_params"], steps=rs[0].get("steps"),
                   matched_prefix_len=rs[0].get("matched_prefix_len"), param_ratio=rs[0].get("param_ratio"),
                   wall_s=mean_std_ci([r.get("wall_s") for r in rs])[0])
        cross = sorted({t for r in rs for t in (r.get("cross_exact_match") or {})})
        row["cross_exact_match"] = {t: mean_std_ci([(r.get("cross_exact_match") or {}).get(t) for r in rs])[0]
                                    for t in cross}
        rows.append(row)
    return rows


MATCH_TOLERANCE = 0.10  # as methods.lora.MATCH_TOLERANCE (results stay importable without the model code)


def method_label(row) -> str:
    """method, then its LoRA targets or its init (soft prompt; prefix unless the reference "normal"); a LoRA run
    by --match-params adds the prefix length it matches, and its count ratio where that is outside ±10 %."""
    detail = row.get("lora_targets") or (row.get("init") if row.get("init") != "normal" else None)
    label = row["method"] + (f":{detail}" if detail else "")
    if row.get("matched_prefix_len") is not None:
        ratio = row.get("param_ratio") or 1.0
        label += f" ≈P={row['matched_prefix_len']}" + (f" (×{ratio:.2f}, unmatched)" if abs(ratio - 1) > MATCH_TOLERANCE else "")
    return label


def is_tuned(row) -> bool:
    """Whether lr and steps are the row's own tuning settings: not for the base ("none": they are pretraining's)
    nor for a search without gradients (prompt: lr 0, steps unused)."""
    return row["method"] != "none" and bool(row.get("lr"))


def lr_text(row, spec: str = "g") -> str:
    """The row's learning rate(s) (a tuple where seeds selected different ones: joined by '/')."""
    lrs = row["lr"] if isinstance(row["lr"], tuple) else (row["lr"],)
    return "/".join(format(v, spec) for v in lrs)


def steps_text(row) -> str:
    """Steps trained: the mean used of the budget where runs stopped early ('812/2000'), else the budget."""
    used, budget = row.get("steps_used"), row.get("steps")
    if used is None or budget is None or round(used) == budget:
        return str(budget)
    return f"{used:.0f}/{budget}"


def format_table(records: list[dict]) -> str:
    rows = summarize(records)
    lrs = [lr_text(r, ".0e") if is_tuned(r) else "-" for r in rows]
    steps = [steps_text(r) if is_tuned(r) else "-" for r in rows]
    w_lr, w_steps = max([8] + [len(x) for x in lrs]), max([6] + [len(x) for x in steps])  # seeds' lrs joined by '/'
    header = f"{'task':<16} {'method':<24} {'len':>4} {'rank':>4} {'lr':>{w_lr}} {'params':>9} {'steps':>{w_steps}} " \
             f"{'exact match %':>15} {'token acc %':>13}  seeds"
    lines = [header, "-" * len(header)]
    for r, lr, st in zip(rows, lrs, steps):
        fmt = lambda v: "-" if v is None else str(v)
        pm = lambda m, sd, w: f"{'diverged':>{w + 8}}" if m is None else f"{100 * m:>{w}.1f} ± {100 * sd:<5.1f}"
        lines.append(
            f"{r['task']:<16} {method_label(r):<24} {fmt(r['context_len']):>4} {fmt(r['lora_rank']):>4} {lr:>{w_lr}} "
            f"{r['trainable_params']:>9,} {st:>{w_steps}} "
            f"{pm(r['exact_match'], r['exact_match_std'], 7)} {pm(r['token_accuracy'], r['token_accuracy_std'], 6)}"
            f"  {r['n_seeds']}" + (f" ({r['n_diverged']} diverged)" if r["n_diverged"] else "")
        )
    return "\n".join(lines)
