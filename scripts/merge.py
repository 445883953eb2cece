#!/usr/bin/env python
"""Join the finished grid shards of one sweep into a single run directory, the unsharded sweep's.

Example (a SLURM job array of 4 ran `scripts/sweep.py ... --out runs/exp`, each job one shard):
  python scripts/merge.py runs/exp                 # finds runs/exp/shard-*-of-4, writes runs/exp/merged
  python scripts/merge.py A B C --out runs/joined  # the shards' run directories named one by one

Checks that the shards are all N parts of one sweep and finished, then writes results.jsonl (in the unsharded
sweep's order), config.json, the checkpoints, results.csv, summary.md and plots/. The shards are only read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from prefixlab.checkpoint import CheckpointError  # noqa: E402
from prefixlab.cli import OneLineParser, os_error_text  # noqa: E402
from prefixlab.safe_paths import UnsafePath  # noqa: E402
from prefixlab.shards import find_shards, merge_shards  # noqa: E402
from prefixlab.sweep_config import SweepError  # noqa: E402


def main(argv=None) -> int:
    p = OneLineParser(prog="merge.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="one folder holding shard-<i>-of-<N> run directories, or the shards' run "
                   "directories themselves")
    p.add_argument("--out", default=None, help="merged run directory (default: <folder>/merged for one folder)")
    p.add_argument("--force", action="store_true", help="replace an earlier merge in --out")
    a = p.parse_args(argv)
    try:
        one_parent = len(a.dirs) == 1 and not (Path(a.dirs[0]) / "config.json").is_file()
        shards = find_shards(a.dirs[0]) if one_parent else [Path(d) for d in a.dirs]
        if a.out is None and not one_parent:
            raise SweepError("--out is needed when the shards are named one by one")
        merge_shards(shards, Path(a.out) if a.out else Path(a.dirs[0]) / "merged", force=a.force,
                     log=lambda m: print(m, file=sys.stderr if m.startswith("warning: ") else sys.stdout))
    except (SweepError, CheckpointError, UnsafePath) as e:
        p.error(str(e))
    except OSError as e:
        p.exit(1, f"merge.py: error: {os_error_text(e)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
