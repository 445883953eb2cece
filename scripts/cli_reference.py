"""Rewrites docs/reference/cli.md from every script's --help (prefixlab.cli_reference)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prefixlab.cli import OneLineParser  # noqa: E402
from prefixlab.cli_reference import PAGE, render  # noqa: E402

if __name__ == "__main__":
    parser = OneLineParser(description=f"Rewrites {PAGE.relative_to(PAGE.parents[2])} from every script's --help "
                           "(tests/test_cli_reference.py fails while it is out of date).")
    parser.parse_args()
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
