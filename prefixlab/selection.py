"""Choosing a learning rate on validation: among the runs that differ only in their learning rate, the one with the
highest validation exact match (then the lowest validation loss, then the smaller rate) is `selected`. Test scores
play no part. Summary tables show the selected runs; results.jsonl keeps the whole grid."""

from __future__ import annotations

import math
from collections import defaultdict

from prefixlab.record import group_of

# what identifies a setting whose learning rates compete: the base (pretraining, model, variant, seed), the group
# (task, method and its settings) and the context length
SETTING_FIELDS = ("pretrain", "model", "variant", "seed", "context_len")


def _rank(record: dict) -> tuple:
    em, loss = record.get("val_exact_match"), record.get("val_loss")
    ok = record.get("status", "ok") == "ok" and em is not None and loss is not None and math.isfinite(loss)
    return (not ok, -(em or 0.0), loss if ok else math.inf, record.get("lr") or 0.0)


def mark_selected(records: list[dict]) -> list[dict]:
    """Sets `selected` on every record: True on the best of each setting's learning rates (see the module
    docstring), False on the others. Returns the records."""
    by_setting = defaultdict(list)
    for r in records:
        by_setting[(group_of(r), *(str(r.get(f)) for f in SETTING_FIELDS))].append(r)
    for runs in by_setting.values():
        best = min(runs, key=_rank)
        for r in runs:
            r["selected"] = r is best
    return records


def selected(records: list[dict]) -> list[dict]:
    """The records tables show: the selected run of each setting. Records from before selection existed (no
    `selected` field) are all kept."""
    return [r for r in records if r.get("selected", True)]
