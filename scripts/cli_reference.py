"""Rewrites docs/reference/cli.md from every script's --help (prefixlab.cli_reference)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prefixlab.cli_reference import PAGE, render  # noqa: E402

if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
