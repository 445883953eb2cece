"""The reproduction's report.md (claims table, then one part per section) and its per-section wall times."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

from prefixlab.experiments.claims import Claim


class Report:
    """Markdown sections, the claims table and the figures of one reproduction."""

    def __init__(self, out: Path, profile: str):
        self.out, self.profile = Path(out), profile
        self.figures = self.out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.parts: list[str] = []
        self.claims: list[Claim] = []

    def section(self, title: str, wall_s: float, body: str):
        self.parts.append(f"## {title}\n\nWall time: {wall_s / 60:.1f} min.\n\n{body}\n")

    def accuracy(self, name: str, records: list[dict], title: str) -> str:
        """Writes figures/<name>_accuracy.png (exact match per task and method, 95 % intervals over seeds) and
        returns its markdown."""
        import matplotlib.pyplot as plt

        from prefixlab.report import accuracy_bars

        fig = accuracy_bars(records, title)
        path = self.figures / f"{name}_accuracy.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return f"![{title}]({path.relative_to(self.out)})"

    def add(self, claims: list[Claim]):
        self.claims += claims

    def write(self, total_s: float):
        cell = lambda text: str(text).replace("|", "\\|")  # a "|" in a cell would end it in the markdown table
        lines = [f"# Reproduction report (profile `{self.profile}`)", "",
                 f"`python scripts/reproduce.py --profile {self.profile} --out {self.out}` — "
                 f"{total_s / 60:.1f} min in all on {platform.machine()} with {os.cpu_count()} cores. "
                 "Numbers: mean over seeds [95 % t-interval].", "",
                 "## Claims", "", "| claim | measured | reference | verdict | protocol |", "|---|---|---|---|---|"]
        lines += [f"| {cell(c.statement)} | {cell(c.measured)} | {cell(c.reference)} | {c.verdict_text} | "
                  f"{cell(c.protocol)} |"
                  for c in self.claims]
        (self.out / "report.md").write_text("\n".join(lines) + "\n\n" + "\n".join(self.parts))


class SectionTiming:
    """Wall seconds per section, kept in <out>/timing.json and added up over runs, so a reproduction that was
    interrupted and resumed reports the time its sections really took (less the interrupted run's partial work)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.seconds: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}

    @contextlib.contextmanager
    def measure(self, name: str):
        self.current, self.t0 = name, time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.so_far()
            self.path.write_text(json.dumps(self.seconds, indent=1) + "\n")

    def so_far(self) -> float:
        """The running section's wall time so far, including earlier runs of it into the same --out."""
        return self.seconds.get(self.current, 0.0) + time.perf_counter() - self.t0


def records_table(records) -> str:
    """The sweep's summary table without its heading lines."""
    from prefixlab.report import summary_markdown

    return summary_markdown(records).split("\n", 4)[4]
