"""Verification table for prefixlab.theory: identities, constructions, capacity, Wang's limitation.

  python scripts/theory.py identities --model-dir tiny     # prefix identities on a preset (random init)
  python scripts/theory.py all --out theory.json            # every check (several minutes on 2 CPU cores)
  python scripts/theory.py wang-scan                        # only Wang E3 / E4 (parameters vs K, 2 layers)

Each row: claim, sizes, measured value (error, loss or count), the threshold it must meet, holds / fails.
The checks live in prefixlab.theory.checks; this script parses flags and writes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from prefixlab.cli import OneLineParser  # noqa: E402
from prefixlab.config import PRESETS  # noqa: E402
from prefixlab.run_dir import output_file_problem  # noqa: E402
from prefixlab.theory import checks  # noqa: E402


def main(argv=None):
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("identities", help="prefix attention identities on a model preset (random weights)")
    a.add_argument("--model-dir", required=True,
                   help=f"preset name ({', '.join(PRESETS)}); checkpoint directories are not supported yet")
    b = sub.add_parser("all", help="identities, constructions, limits, capacity and Wang's limitation")
    c = sub.add_parser("wang-scan", help="only Wang E3 (parameters vs examples) and E4 (two inputs, same output)")
    for s in (a, b, c):
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", help="write the table as JSON to this path")
    args = ap.parse_args(argv)
    problem = args.out and output_file_problem(args.out)
    if problem:  # before minutes of computing
        ap.exit(2, f"theory.py: error: --out {problem}\n")
    try:
        data = checks.timed_part(args.cmd, " ".join(sys.argv), args.seed, getattr(args, "model_dir", "tiny"),
                                 log=print)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_fail = sum(not r["holds"] for r in data["rows"])
    print(f"{len(data['rows'])} checks, {n_fail} failing, {data['wall_s']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
