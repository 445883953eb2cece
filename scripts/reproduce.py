#!/usr/bin/env python
"""Reproduce both papers: every section's sweeps, figures and verdicts, in one report.

  python scripts/reproduce.py --profile quick --out runs/repro-quick     # 2-core CPU: about an hour (README)
  python scripts/reproduce.py --profile paper --out runs/repro-paper     # the papers' sizes: GPU or TPU
  python scripts/reproduce.py --profile decide --out runs/repro-decide   # the three open claims: exp 4, scaling, budget
  python scripts/reproduce.py --profile quick --sections exp1,theory     # a part

Every section runs in this process (a TPU chip takes one process), on a CPU two at a time in threads (--lanes;
two programs at once use the 2 cores better than one: docs/performance.md), else one after another: its sweeps go into
<out>/<section>/ (pretrained bases come from the shared cache, and an interrupted reproduction continues where it
stopped when run again with the same --out), then it measures what the paper plots. <out>/report.md has, per section,
the wall time, every number as mean [95 % interval] over the seeds next to the reference value, a verdict per claim,
and the figures in <out>/figures/. The same from Python: prefixlab.experiments.run_reproduction(profile, out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from prefixlab.cli import OneLineParser, os_error_text  # noqa: E402
from prefixlab.experiments import SECTIONS, run_reproduction  # noqa: E402
from prefixlab.experiments.profiles import PROFILES  # noqa: E402


def main(argv=None) -> int:
    p = OneLineParser(prog="reproduce.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=list(PROFILES), default="quick", help="sizes and steps (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory (re-running with the same --out resumes)")
    p.add_argument("--sections", default=None, help="comma list of " + ", ".join(SECTIONS) + " (default: the "
                   "profile's: " + "; ".join(f"{k} {','.join(v['sections'])}" for k, v in PROFILES.items()) + ")")
    p.add_argument("--cache-dir", default=None, help="pretrained-base cache (default: that of sweep.py)")
    p.add_argument("--lanes", type=int, default=None, help="sections run at a time, in threads of this process "
                   "(default: 2 on a CPU, 1 on a GPU/TPU); results do not depend on it")
    a = p.parse_args(argv)
    if a.lanes is not None and a.lanes < 1:
        p.exit(2, f"reproduce.py: error: --lanes must be >= 1, got {a.lanes}\n")
    sections = None if a.sections is None else [s.strip() for s in a.sections.split(",")]  # None: the profile's
    bad = [s for s in sections or [] if s not in SECTIONS]
    if bad:
        p.exit(2, f"reproduce.py: error: unknown section(s) {bad}; valid: {', '.join(SECTIONS)}\n")
    from prefixlab.sweep import SweepError

    from prefixlab.checkpoint import CheckpointError
    from prefixlab.run_dir import start_dirs
    from prefixlab.safe_paths import UnsafePath, unmake

    created = []
    try:
        created = start_dirs({"--out": Path(a.out)})  # before any section computes
        run_reproduction(a.profile, a.out, sections, a.cache_dir, lanes=a.lanes)
    except (SweepError, CheckpointError, UnsafePath) as e:  # cannot run or resume as configured: one line
        unmake(created)  # a refused start leaves no folder behind
        p.error(str(e))
    except OSError as e:
        p.exit(1, f"reproduce.py: error: {os_error_text(e)}; finished sections are kept: run it again to continue\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
