#!/usr/bin/env python
"""Rebuild a run directory's results.csv, summary.md and plots/*.png from its results.jsonl alone.

Example:
  python scripts/report.py runs/exp1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from prefixlab.report import write_report  # noqa: E402
from prefixlab.results import check_records, read_jsonl_repairing  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="run directory holding results.jsonl")
    a = p.parse_args(argv)
    path = Path(a.out) / "results.jsonl"
    if not path.is_file():
        p.exit(2, f"report.py: error: {path} does not exist\n")
    try:
        records = read_jsonl_repairing(path)
    except ValueError as e:
        p.exit(2, f"report.py: error: {path} is not JSON lines ({e})\n")
    try:
        check_records(records, path)  # before anything is written
    except ValueError as e:
        p.exit(2, f"report.py: error: {e}\n")
    if not records:
        p.exit(2, f"report.py: error: {path} holds no results\n")
    for f in write_report(Path(a.out), records):
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
