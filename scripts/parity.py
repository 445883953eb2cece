#!/usr/bin/env python
"""Experiment 1 in float32 and in bfloat16 (--compute-dtype): do the verdicts agree, and does each (task, method)'s
bf16 mean loss and accuracy fall inside the f32 seeds' 95 % interval? Prints a table, writes JSON, exits 1 if not.

Example (paper-exp1 size, 3 seeds; about 11 minutes on 2 cores):
  python scripts/parity.py --profile quick --out runs/parity
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from prefixlab.cli import OneLineParser  # noqa: E402
from prefixlab.experiments import exp1  # noqa: E402
from prefixlab.experiments.precision_parity import agree, compare  # noqa: E402
from prefixlab.experiments.profiles import PROFILES  # noqa: E402
from prefixlab.sweep import SweepError  # noqa: E402


def main(argv=None) -> int:
    p = OneLineParser(prog="parity.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=list(PROFILES), default="quick", help="exp 1's sizes (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for the two run directories and parity.json")
    a = p.parse_args(argv)
    try:
        result = compare(exp1.configs(a.profile)["exp1"], a.out)
    except SweepError as e:
        p.exit(2, f"parity.py: error: {e}\n")
    print("verdicts  float32:", result["verdicts"]["float32"], " bfloat16:", result["verdicts"]["bfloat16"])
    for r in result["rows"]:
        print(f"  {r['task']:<10} {r['method']:<12} {r['field']:<15} f32 {r['f32_mean']:.4f} ± {r['f32_half']:.4f}   "
              f"bf16 {r['bf16_mean']:.4f}   {'inside' if r['inside'] else 'OUTSIDE'}")
    (Path(a.out) / "parity.json").write_text(json.dumps(result, indent=1) + "\n")
    print("agree" if agree(result) else "DISAGREE")
    return 0 if agree(result) else 1


if __name__ == "__main__":
    sys.exit(main())
