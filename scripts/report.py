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

from prefixlab.cli import OneLineParser, os_error_text  # noqa: E402
from prefixlab.sweep_report import write_report  # noqa: E402
from prefixlab.results import read_jsonl  # noqa: E402


def main(argv=None) -> int:
    p = OneLineParser(prog="report.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="run directory holding results.jsonl")
    a = p.parse_args(argv)
    path = Path(a.out) / "results.jsonl"
    if not path.is_file():
        p.error(f"{path} does not exist")
    warn = lambda message: print(f"report.py: warning: {message}", file=sys.stderr)
    try:  # only read: a line that is not JSON is skipped with a warning (repairing is --resume's job)
        records = read_jsonl(path, warn=warn, check=True)  # every record checked before anything is written
    except ValueError as e:
        p.error(str(e))
    if not records:
        p.error(f"{path} holds no results")
    try:
        files = write_report(Path(a.out), records)
    except OSError as e:
        p.exit(1, f"report.py: error: {os_error_text(e)}\n")
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
