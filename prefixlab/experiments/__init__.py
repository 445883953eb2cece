"""The reproduction of Petrov et al. (ICLR 2024) and Wang et al. (NeurIPS 2023) as code, run in one process.

    from prefixlab.experiments import run_reproduction
    run_reproduction("quick", "runs/repro-quick", sections=["exp1", "theory"])

One module per paper section: `configs(profile)` gives its sweeps ({run directory name: SweepConfig}), `claims(records,
profile)` its verdicts (a pure function of the records), and `run(repro)` runs the sweeps, the claims and the figures
into the report; `@section(name, configs=...)` (sections.py) registers it, so a new section is one module. Sections
run in this process (a TPU chip takes one process), through prefixlab.sweep.run_sweep; re-running into the same
`out` resumes each sweep and keeps finished theory tables.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from prefixlab.claim import Claim
from prefixlab.experiments.lanes import default_lanes, run_lanes
from prefixlab.experiments.profiles import PROFILES
from prefixlab.experiments.report import Report, SectionTiming
from prefixlab.experiments.sections import registered


def __getattr__(name: str):
    if name == "SECTIONS":  # the registered sections' names, found when first asked (importing every section)
        return list(registered())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass
class Reproduction:
    """One reproduction under way, as a section's run(repro) sees it: where to write, the profile's sizes, the
    report and the clock."""

    out: Path
    profile: str
    cache_dir: Path | None
    report: Report
    timing: SectionTiming
    log: object = print
    progress: bool = False  # the sweeps' own log lines and tqdm bars, as they go

    @property
    def sizes(self) -> dict:
        return PROFILES[self.profile]

    def config(self, config):
        """The section's SweepConfig with this reproduction's base cache."""
        return dataclasses.replace(config, cache_dir=str(self.cache_dir)) if self.cache_dir else config

    def sweep(self, name: str, config) -> list[dict]:
        """Runs (or resumes, when <out>/<name>/config.json exists) one sweep and returns its records."""
        from prefixlab.sweep import run_sweep

        run_dir = self.out / name
        resume = (run_dir / "config.json").exists()
        self.log(f"  sweep {name} -> {run_dir}" + (" (resuming)" if resume else ""), flush=True)
        return run_sweep(self.config(config), run_dir, resume=resume, progress=self.progress,
                         log=self.log if self.progress else _quiet)


def _quiet(*args, **kwargs):
    """The sweeps' own log: kept out of the reproduction's output, as `--quiet` with captured output did."""


def run_reproduction(profile: str, out, sections=None, cache_dir=None, log=print, progress=False,
                     lanes: int | None = None, eta: bool = True) -> Path:
    """Runs `sections` (default: the profile's own, PROFILES[profile]["sections"]; the report keeps the order given)
    of the reproduction with the sizes of `profile` into `out`, `lanes` sections at a time (default: 2 on a CPU,
    1 on an accelerator; see lanes.py); writes <out>/report.md after every section and returns its path.
    Results do not depend on `lanes`. eta: first log each section's ETA (an upper bound). `log(*args, flush=...)`
    gets the reproduction's lines (a section's start, each sweep's run directory); with progress=True also the sweeps' own
    (bases restored or pretrained, one line per finished group, the sweep's table), and every training run shows
    a tqdm bar (tqdm.auto: a widget in a notebook), so a long section shows how it goes. Raises ValueError for an
    unknown profile or section, prefixlab.sweep.SweepError when a sweep cannot run or resume as configured."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    sections = list(PROFILES[profile]["sections"] if sections is None else (
        [s.strip() for s in sections.split(",")] if isinstance(sections, str) else sections))
    known = registered()
    bad = [s for s in sections if s not in known]
    if bad:
        raise ValueError(f"unknown section(s) {bad}; valid: {', '.join(known)}")
    lanes = default_lanes() if lanes is None else lanes
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    out = Path(out)
    repro = Reproduction(out, profile, Path(cache_dir) if cache_dir else None, Report(out, profile, sections, lanes),
                         SectionTiming(out / "timing.json"), log, progress)
    if eta:  # each section's upper-bound time, before any work (prefixlab/experiments/eta.py)
        from prefixlab.experiments.eta import describe, estimate, section_configs

        rates, seen = {}, set()
        for name in sections:
            log(describe(name, estimate([repro.config(c) for c in section_configs(name, profile)], rates, seen)),
                flush=True)
    start = time.perf_counter()

    def run_one(name: str) -> None:
        log(f"[{name}] starts at {time.perf_counter() - start:6.0f} s", flush=True)
        with repro.timing.measure(name), repro.report.collecting(name):
            known[name].run(repro)
        repro.report.write(repro.timing.wall_s)  # a partial report after every section
        log(f"[{name}] done at {time.perf_counter() - start:6.0f} s", flush=True)

    run_lanes(sections, run_one, lanes)
    path = out / "report.md"
    log(f"report: {path} ({(time.perf_counter() - start) / 60:.1f} min)")
    return path


__all__ = ["Claim", "PROFILES", "Report", "Reproduction", "SECTIONS", "SectionTiming", "run_reproduction"]
