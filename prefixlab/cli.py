"""What every script shares: a parser whose errors are one line (argparse prints its usage block first), and one
line for what a run can meet at the file system (a full disk, a read-only part, a denied permission)."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """Bad input: one line on stderr, `<prog>: error: <message>`, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def os_error_text(e: OSError) -> str:
    """`<path>: <what the system said>`: the path is what the user can act on."""
    where = e.filename if e.filename is not None else "(no path given)"
    return f"{where}: {e.strerror or e}"
