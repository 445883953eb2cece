"""Result records (prefixlab/record.py): JSON lines written one whole line at a time, CSV, and a summary table with
one row per group and context length."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from prefixlab import record as R
from prefixlab import schema as S
from prefixlab.safe_paths import append_bytes, replace_bytes


def append_jsonl(path: Path, records: dict | list[dict]) -> None:
    """Appends records (one line each) in a single write + fsync, so a kill leaves no torn group behind; never
    through a link, and a full disk leaves none of them (safe_paths.append_bytes)."""
    records = [records] if isinstance(records, dict) else records
    append_bytes(path, "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records).encode())


def check_record(record, where: str, need_group: bool = False) -> dict:
    """`record` if it has record.REQUIRED (and `group`, for resume) and every field of record.KINDS it has is of its
    kind, else ValueError naming `where` (file and line) and the field. A method's own columns are not checked."""
    if not isinstance(record, dict):
        raise S.SchemaError(f"{where}: a {type(record).__name__}, not a record object")
    missing = [k for k in R.REQUIRED + (("group",) if need_group else ()) if k not in record]
    if missing:
        raise S.SchemaError(f"{where}: record without {', '.join(missing)}")
    return S.check(R.KINDS, record, where, R.OPTIONAL)


def check_records(records: list, path) -> None:
    """Raises ValueError naming the first line of `path` that is not a record object with record.REQUIRED."""
    for i, r in enumerate(records, 1):
        check_record(r, f"{path}, line {i}")


def _lines(data: bytes):
    """(line number, text) of each non-blank line."""
    for i, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield i, line.decode("utf-8", errors="replace")


def read_jsonl(path: Path, warn=None, check: bool = False, need_group: bool = False) -> list[dict]:
    """The JSON lines of `path`, only read. A line that is not JSON (torn, garbage): with `warn`, warn(message naming
    its line) and skip it; without, ValueError naming it. check: each must be a record (check_record, with a
    `group` if need_group), else ValueError naming its line and field."""
    out = []
    for i, line in _lines(Path(path).read_bytes()):
        try:
            r = json.loads(line)
        except ValueError as e:
            message = f"{path}, line {i}: not JSON ({e.msg})"
            if warn is None:
                raise S.SchemaError(message) from None
            warn(message + "; line skipped")
            continue
        out.append(check_record(r, f"{path}, line {i}", need_group) if check else r)
    return out


def read_jsonl_repairing(path: Path, log=print, check: bool = False) -> list[dict]:
    """Resume's reading of results.jsonl: a torn last line (a kill inside a write: no newline, not JSON) is cut off
    the file, with a message; any other damage (a line that is not JSON; with `check`, a record without its fields
    or its group) is a ValueError naming the line, with the file unchanged."""
    data = Path(path).read_bytes()
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    torn = False
    if tail.strip():
        try:
            json.loads(tail)
            keep = len(data)  # a whole last record without its newline
        except ValueError:
            torn = True
    records = []
    for i, line in _lines(data[:keep]):
        try:
            r = json.loads(line)
        except ValueError as e:
            raise S.SchemaError(f"{path}, line {i}: not JSON ({e.msg}); a damaged file: restore it or remove that "
                                "line") from None
        records.append(check_record(r, f"{path}, line {i}", need_group=True) if check else r)
    if torn:
        log(f"{path}: removed a torn last line ({len(tail)} bytes) left by an interrupted write")
        replace_bytes(path, data[:keep])  # a new file: a link there is replaced, not written through
    return records


def loss_curve(losses_U, points: int = 100) -> list[float]:
    """The training loss as at most `points` window means (what plots need; the full curve is in the checkpoint)."""
    losses_U = np.asarray(losses_U, np.float64)
    if losses_U.size == 0 or np.isnan(losses_U).all():
        return []
    windows = np.array_split(losses_U, min(points, losses_U.size))
    return [round(float(w.mean()), 6) if np.isfinite(w).all() else None for w in windows]


# results.csv: a column per record key (curves stay in the JSON lines), units in the names; a method's own settings
# come after `method`, the rest in this order. docs/reference/sweeps.md lists them.
CSV_LEAD = ("task", "method")
CSV_ORDER = ("context_len", "lr", "selected", "steps", "steps_used", "stop_reason", "seed", "status",
             "trainable_params", "exact_match_pct", "token_accuracy_pct", "cross_exact_match_pct",
             "val_exact_match_pct", "val_loss_nats", "final_loss_nats", "loss_falling_at_stop", "wall_s", "matched_prefix_len",
             "matched_prefix_params", "param_ratio", "group", "pretrain", "pretrain_steps", "model", "variant")
_CSV_NAMES = {"exact_match": "exact_match_pct", "token_accuracy": "token_accuracy_pct",
              "val_exact_match": "val_exact_match_pct", "cross_exact_match": "cross_exact_match_pct",
              "final_loss": "final_loss_nats", "val_loss": "val_loss_nats"}
_JSON_ONLY = ("loss_curve", "val_curve")
_PCT_FIELDS = {"exact_match_pct": "exact_match", "token_accuracy_pct": "token_accuracy",
               "val_exact_match_pct": "val_exact_match"}


def _pct_or_none(x):
    return None if x is None else round(100 * x, 6)


def csv_columns(records: list[dict]) -> list[str]:
    """The union of the records' keys as CSV columns: task, method, the methods' own columns (first seen first), then
    CSV_ORDER's; only those some record has."""
    present = {_CSV_NAMES.get(k, k) for r in records for k in r if k not in _JSON_ONLY}
    own = [k for k in dict.fromkeys(k for r in records for k in r) if k not in R.KINDS and k not in _JSON_ONLY]
    return [c for c in (*CSV_LEAD, *own, *CSV_ORDER) if c in present]


def _csv_row(record: dict) -> dict:
    """A record as CSV cells: fractions become %, the cross-task scores one `task=%;task=%` cell (a column per
    task would change the header from task to task), curves stay in the JSON lines only."""
    row = {_CSV_NAMES.get(k, k): v for k, v in record.items() if k not in _JSON_ONLY}
    row.update({col: _pct_or_none(record.get(k)) for col, k in _PCT_FIELDS.items() if k in record})
    if "cross_exact_match" in record:
        row["cross_exact_match_pct"] = ";".join(f"{t}={'' if v is None else _pct_or_none(v)}"
                                                for t, v in sorted((record["cross_exact_match"] or {}).items()))
    return row


def write_csv(path: Path, records: list[dict]) -> None:
    """results.csv, replacing the file (or a link) at `path`, never writing through it."""
    write_rows_csv(path, (_csv_row(r) for r in records), csv_columns(records))


def write_rows_csv(path: Path, rows, columns: list[str]) -> None:
    """Rows (dicts) as CSV with these columns, replacing the file (or a link) at `path`, never writing through it."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
    replace_bytes(path, text.getvalue().encode())


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
    """One row per group and context length (x lr, for records from before learning rates were selected): mean,
    std and 95 % interval over seeds. Where runs carry `selected` (prefixlab/selection.py), only the selected ones
    count, and `lr` is the rate chosen, or a tuple of them where seeds chose differently. A row's `label` is its
    group's method tag (the method and its settings)."""
    chosen = any("selected" in r for r in records)
    records = [r for r in records if r.get("selected", True)]
    groups = defaultdict(list)
    for r in records:
        groups[(R.group_of(r), r.get("context_len")) + (() if chosen else (r.get("lr"),))].append(r)
    rows = []
    for (group, context_len, *_), rs in groups.items():
        em, em_sd, em_ci = mean_std_ci([r["exact_match"] for r in rs])
        ta, ta_sd, ta_ci = mean_std_ci([r["token_accuracy"] for r in rs])
        lrs = sorted({r.get("lr") for r in rs}, key=lambda v: v or 0.0)
        used = [r["steps_used"] for r in rs if r.get("steps_used") is not None]
        row = dict(task=rs[0]["task"], method=rs[0]["method"], group=group, label=R.label(rs[0]),
                   context_len=context_len, lr=lrs[0] if len(lrs) == 1 else tuple(lrs),
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
    """The row's group without its task (the method's tag: its name and settings); a LoRA run by --match-params adds
    the prefix length it matches, and its count ratio where that is outside ±10 %."""
    label = row.get("label") or R.label(row)
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
    header = f"{'task':<16} {'method':<28} {'len':>4} {'lr':>{w_lr}} {'params':>9} {'steps':>{w_steps}} " \
             f"{'exact match %':>15} {'token acc %':>13}  seeds"
    lines = [header, "-" * len(header)]
    for r, lr, st in zip(rows, lrs, steps):
        fmt = lambda v: "-" if v is None else str(v)
        pm = lambda m, sd, w: f"{'diverged':>{w + 8}}" if m is None else f"{100 * m:>{w}.1f} ± {100 * sd:<5.1f}"
        lines.append(
            f"{r['task']:<16} {method_label(r):<28} {fmt(r['context_len']):>4} {lr:>{w_lr}} "
            f"{r['trainable_params']:>9,} {st:>{w_steps}} "
            f"{pm(r['exact_match'], r['exact_match_std'], 7)} {pm(r['token_accuracy'], r['token_accuracy_std'], 6)}"
            f"  {r['n_seeds']}" + (f" ({r['n_diverged']} diverged)" if r["n_diverged"] else "")
        )
    return "\n".join(lines)
