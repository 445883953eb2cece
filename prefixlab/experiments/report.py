"""The reproduction's report.md (claims table, then one part per section) and its per-section wall times."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from pathlib import Path

from prefixlab.claim import Claim
from prefixlab.experiments.profiles import PROFILES
from prefixlab.safe_paths import real_dir
from prefixlab.sweep_report import save_figure


class Report:
    """Markdown sections, the claims table and the figures of one reproduction. `order`: the sections in report
    order; what a section adds inside `collecting(section)` goes to its place there, whichever thread (lane) runs
    it and whenever it finishes. lanes: how many sections ran at a time (stated in the header)."""

    def __init__(self, out: Path, profile: str, order=(), lanes: int = 1):
        self.out, self.profile, self.order, self.lanes = Path(out), profile, list(order), lanes
        self.figures = real_dir(self.out / "figures")  # a link there is replaced: no figure lands where it points
        self._slots: dict[str | None, tuple[list[Claim], list[str]]] = {}
        self._local, self._lock = threading.local(), threading.Lock()

    @contextlib.contextmanager
    def collecting(self, section: str):
        """What this thread adds in the block belongs to `section`."""
        self._local.section = section
        try:
            yield
        finally:
            self._local.section = None

    def _slot(self):
        """This thread's section's (claims, parts); call with the lock held."""
        return self._slots.setdefault(getattr(self._local, "section", None), ([], []))

    def _in_order(self) -> list:
        keys = [None] + self.order + [k for k in self._slots if k is not None and k not in self.order]
        return [self._slots[k] for k in keys if k in self._slots]

    @property
    def claims(self) -> list[Claim]:
        return [c for claims, _ in self._in_order() for c in claims]

    @property
    def parts(self) -> list[str]:
        return [p for _, parts in self._in_order() for p in parts]

    def section(self, title: str, wall_s: float, body: str):
        with self._lock:
            self._slot()[1].append(f"## {title}\n\nWall time: {wall_s / 60:.1f} min.\n\n{body}\n")

    def accuracy(self, name: str, records: list[dict], title: str) -> str:
        """Writes figures/<name>_accuracy.png (exact match per task and method, 95 % intervals over seeds) and
        returns its markdown."""
        import matplotlib.pyplot as plt

        from prefixlab.sweep_report import accuracy_bars

        fig = accuracy_bars(records, title)
        path = self.figures / f"{name}_accuracy.png"
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        return f"![{title}]({path.relative_to(self.out)})"

    def add(self, claims: list[Claim]):
        with self._lock:
            self._slot()[0].extend(claims)

    def write(self, total_s: float):
        cell = lambda text: str(text).replace("|", "\\|")  # a "|" in a cell would end it in the markdown table
        lanes = min(self.lanes, len(self.order)) if self.order else self.lanes  # one section runs in one lane
        side = f", {lanes} sections at a time (their wall times overlap)" if lanes > 1 else ""
        default = PROFILES.get(self.profile, {}).get("sections")
        picked = f" --sections {','.join(self.order)}" if self.order and tuple(self.order) != tuple(default or ()) else ""
        with self._lock:
            claims, parts = self.claims, self.parts
        lines = [f"# Reproduction report (profile `{self.profile}`)", "",
                 f"`python scripts/reproduce.py --profile {self.profile}{picked} --out {self.out}` — "
                 f"{total_s / 60:.1f} min in all on {platform.machine()} with {os.cpu_count()} cores{side}. "
                 "Numbers: mean over seeds [95 % t-interval].", "",
                 "## Claims", "", "| claim | measured | reference | verdict | protocol |", "|---|---|---|---|---|"]
        lines += [f"| {cell(c.statement)} | {cell(c.measured)} | {cell(c.reference)} | {c.verdict_text} | "
                  f"{cell(c.protocol)} |"
                  for c in claims]
        with self._lock:
            (self.out / "report.md").write_text("\n".join(lines) + "\n\n" + "\n".join(parts))


class SectionTiming:
    """Wall seconds per section and of the whole reproduction, kept in <out>/timing.json and added up over runs, so
    a reproduction that was interrupted and resumed reports the time it really took (less the interrupted run's
    partial work). Sections may be measured in several threads at once (lanes); each thread's `so_far` is its
    own section's. The file: {"sections": {name: s}, "wall_s": s} (an older flat {name: s} is read too)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.seconds: dict[str, float] = data.get("sections", data) if "wall_s" in data else data
        self._wall_before, self._run_t0 = float(data.get("wall_s", 0.0)), time.perf_counter()
        self._local, self._lock = threading.local(), threading.Lock()

    @property
    def wall_s(self) -> float:
        """The reproduction's wall time: earlier runs into this --out plus this one so far."""
        return self._wall_before + time.perf_counter() - self._run_t0

    @contextlib.contextmanager
    def measure(self, name: str):
        self._local.current, self._local.t0 = name, time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] = self.so_far()
                self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps({"sections": self.seconds, "wall_s": self.wall_s}, indent=1) + "\n")

    def so_far(self) -> float:
        """This thread's running section's wall time so far, including earlier runs of it into the same --out."""
        return self.seconds.get(self._local.current, 0.0) + time.perf_counter() - self._local.t0


def records_table(records) -> str:
    """The sweep's summary table without its heading lines."""
    from prefixlab.sweep_report import summary_markdown

    return summary_markdown(records).split("\n", 4)[4]
