"""A sweep's run directory: one writer at a time (a pid lock), a manifest of what the sweep wrote and which
groups are complete, resume's view of what is done, and `force`'s cleanup of only the sweep's own files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import jax

from prefixlab import checkpoint as ckpt
from prefixlab.locks import LockHeld, PidLock
from prefixlab.results import read_jsonl_repairing
from prefixlab.sweep_config import CONFIG_VERSION, SweepConfig, SweepError, load_config

MANIFEST = "manifest.json"
LOCK = "sweep.lock"
# files the sweep writes at the top of the run directory (groups' checkpoints are listed one by one)
TOP_FILES = ("config.json", "results.jsonl", "results.csv", "summary.md", "plots", "ckpt/base", MANIFEST)


@contextlib.contextmanager
def lock(run_dir: Path):
    """`with lock(run_dir):` one writer at a time; a second is refused in one line naming the holder."""
    try:
        held = PidLock(run_dir / LOCK).__enter__()
    except LockHeld as e:
        raise SweepError(f"{run_dir} is in use by process {e.pid} ({e.path}); wait for it to finish or use "
                         "another directory", "out") from None
    try:
        yield
    finally:
        held.__exit__(None, None, None)


class Manifest:
    """manifest.json: {"groups": {group: {"records": n, "checkpoint": bool}}, "written": [paths relative to the
    run directory]}. A group is complete when the manifest lists it, its n records are all in results.jsonl and
    its checkpoint (if it has one) is intact."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / MANIFEST
        self.data = {"groups": {}, "written": list(TOP_FILES)}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError as e:
                raise SweepError(f"{self.path}: unreadable manifest ({e})", "out") from None

    def save(self):
        ckpt.write_json_atomic(self.path, self.data)

    def wrote(self, relative: str):
        if relative not in self.data["written"]:
            self.data["written"].append(relative)
            self.save()

    def group_done(self, group: str, n_records: int, checkpoint: bool):
        self.data["groups"][group] = {"records": n_records, "checkpoint": checkpoint}
        self.save()


def check_writable(path: Path, field: str) -> None:
    """Creates `path` as a directory if needed and checks that files can be written in it, or raises SweepError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}-{threading.get_ident()}"  # threads: lanes
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SweepError(f"{field} {path} is not a writable directory ({e.strerror or e})", field) from None


def output_file_problem(path) -> str | None:
    """Why a result file cannot be written at `path` (checked before computing), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{path}: {parent} is a file"
    if not os.access(parent, os.W_OK):
        return f"{path}: {parent} is not writable"
    return None


def open_run_dir(config: SweepConfig | None, run_dir: Path, resume: bool, force: bool) -> SweepConfig:
    """Checks the run directory against the request before anything is computed; returns the config to run."""
    if resume and force:
        raise SweepError("resume and force exclude each other")
    if resume:
        stored = load_config(run_dir)
        if config is not None:
            diff = config.resolved().differences(stored)
            if diff:
                raise SweepError(f"cannot resume {run_dir}: {', '.join(diff)} differ from its config.json",
                                 diff[0])
        return stored
    if config is None:
        raise SweepError("run_sweep needs a config (or resume=True to use the run directory's own)")
    if run_dir.exists() and not run_dir.is_dir():
        raise SweepError(f"{run_dir} is a file, not a directory", "out")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise SweepError(f"{run_dir} already exists; pass --resume (resume=True) to continue it, --force "
                             "(force=True) to replace it, or another directory", "out")
        if not (run_dir / MANIFEST).is_file():
            raise SweepError(f"{run_dir} is not a prefixlab run directory (no {MANIFEST}); force replaces only "
                             "a sweep's own files: remove it yourself or choose another directory", "out")
    return config.resolved()


def remove_sweep_files(run_dir: Path) -> None:
    """Removes what the manifest says a sweep wrote (links themselves, never their targets), then empty folders."""
    for rel in Manifest(run_dir).data["written"]:
        base = run_dir / rel
        for path in (base, *(base.with_name(base.name + s) for s in (".partial", ".saving", ".old"))):
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
    ckpt_dir = run_dir / "ckpt"
    if ckpt_dir.is_dir() and not ckpt_dir.is_symlink():
        for d in [*sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and not p.is_symlink())), ckpt_dir]:
            if not any(d.iterdir()):
                d.rmdir()


def complete_groups(run_dir: Path, records: list[dict], report) -> set[str]:
    """The manifest's groups whose records are all in `records` and whose checkpoint (if any) is intact; reads
    only. report(problem, group) hears of each damaged checkpoint."""
    counts = Counter(r["group"] for r in records)
    done = set()
    for group, entry in Manifest(run_dir).data["groups"].items():
        if counts.get(group) != entry["records"]:
            continue
        if entry["checkpoint"]:
            group_dir = run_dir / "ckpt" / group
            try:
                if not ckpt.exists(group_dir):
                    raise ckpt.CheckpointError(f"{group_dir}: checkpoint missing")
                ckpt.verify(group_dir)
            except ckpt.CheckpointError as e:
                report(str(e), group)
                continue
        done.add(group)
    return done


def done_groups(run_dir: Path, log) -> set[str]:
    """Groups whose records are all in results.jsonl, as the manifest counts them, and whose checkpoint is intact.
    Records of any other group (a torn line, a group cut short, a damaged checkpoint) are dropped from
    results.jsonl, so that group runs again and nothing is doubled."""
    results = run_dir / "results.jsonl"
    records = read_jsonl_repairing(results, log) if results.exists() else []
    manifest = Manifest(run_dir)
    done = complete_groups(run_dir, records, lambda problem, group: log(f"{problem}; group {group} runs again"))
    keep = [r for r in records if r["group"] in done]
    if len(keep) < len(records):
        dropped = sorted({r["group"] for r in records} - done)
        log(f"{results}: {len(records) - len(keep)} record(s) of unfinished group(s) {', '.join(dropped)} "
            "removed; they run again")
        tmp = results.with_name(results.name + ".rewrite")
        tmp.write_text("".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in keep))
        os.replace(tmp, results)
    for group in set(manifest.data["groups"]) - done:
        del manifest.data["groups"][group]
    manifest.save()
    return done


def write_config(config: SweepConfig, run_dir: Path) -> None:
    ckpt.write_json_atomic(run_dir / "config.json", {
        "config_version": CONFIG_VERSION, "sweep": config.to_dict(),
        "model_config": dataclasses.asdict(config.model_config), "variant": config.task_variant.name,
        "jax_version": jax.__version__, "devices": [str(d) for d in jax.devices()]})
