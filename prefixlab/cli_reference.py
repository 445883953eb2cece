"""docs/reference/cli.md: every script's `--help`, rendered in process at a fixed width, so a test can check the
page is current (`python scripts/cli_reference.py` rewrites it)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("sweep.py", "reproduce.py", "report.py", "merge.py", "theory.py", "bench.py", "parity.py")
PAGE = ROOT / "docs" / "reference" / "cli.md"
WIDTH = "100"


def help_text(script: str) -> str:
    """The script's `--help` output, as `python scripts/<script> --help` prints it in a 100-column terminal."""
    spec = importlib.util.spec_from_file_location(f"_cli_{script[:-3]}", ROOT / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    out = io.StringIO()
    with mock.patch.object(sys, "argv", [script]), mock.patch.dict(os.environ, {"COLUMNS": WIDTH}):
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            module.main(["--help"])
    return out.getvalue().rstrip() + "\n"


def render() -> str:
    parts = ["# Command-line reference", "",
             "Generated from each script's `--help` by `python scripts/cli_reference.py`; `tests/test_cli_reference.py`",
             "fails when this page and the scripts disagree.", ""]
    for script in SCRIPTS:
        parts += [f"## `scripts/{script}`", "", "```", help_text(script).rstrip(), "```", ""]
    return "\n".join(parts)
