"""A sweep's run directory: one writer at a time (a pid lock), a manifest of what the sweep wrote and which
groups are complete, resume's view of what is done, and `force`'s cleanup of only the sweep's own files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections import Counter
from pathlib import Path

import jax

from prefixlab import checkpoint as ckpt
from prefixlab import schema as S
from prefixlab.locks import LockHeld, PidLock
from prefixlab.results import read_jsonl_repairing
from prefixlab.safe_paths import UnsafePath, check_entry, inside, make_dirs, remove, replace_bytes, unmake
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
    """manifest.json: {"groups": {group: {"records": n, "checkpoint": bool, "config_hash": hash}}, "written": [paths
    relative to the run directory]}. A group is complete when the manifest lists it, its n records are all in
    results.jsonl and its checkpoint (if it has one) is intact; config_hash names the configuration it ran under.
    A manifest is input like any file of a run directory: it is checked by key, type and path when read, so a damaged
    or crafted one is refused in one line before anything is deleted."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / MANIFEST
        self.data = {"groups": {}, "written": list(TOP_FILES)}
        if self.path.is_file():
            try:
                self.data = _checked_manifest(json.loads(self.path.read_text()), self.path)
            except (ValueError, UnsafePath) as e:  # json's, schema's and path errors
                text = str(e) if str(e).startswith(str(self.path)) else f"{self.path}: unreadable manifest ({e})"
                raise SweepError(text, "out") from None

    def save(self):
        ckpt.write_json_atomic(self.path, self.data)

    def wrote(self, relative: str):
        if relative not in self.data["written"]:
            self.data["written"].append(relative)
            self.save()

    def group_done(self, group: str, n_records: int, checkpoint: bool, config_hash: str):
        self.data["groups"][group] = {"records": n_records, "checkpoint": checkpoint, "config_hash": config_hash}
        self.save()


GROUP_ENTRY = {"records": S.COUNT, "checkpoint": S.BOOL, "config_hash": S.STR}


def _checked_manifest(data, path: Path) -> dict:
    S.check({"groups": S.OBJECT, "written": S.list_of(S.STR)}, data, str(path))
    for group, entry in data["groups"].items():
        check_entry(group, f"{path}, groups")
        S.check(GROUP_ENTRY, entry, f"{path}, group {group}", optional_keys=("config_hash",))  # older: no hash
    for entry in data["written"]:
        check_entry(entry, f"{path}, written")
    return data


def config_hash(config: SweepConfig | dict) -> str:
    """What a finished group ran under: the config's fields as config.json holds them (a SweepConfig, or the fields
    read from the file) but where state lives (cache_dir) and which grid shard ran it."""
    fields = config.to_dict() if isinstance(config, SweepConfig) else config
    return ckpt.content_hash({k: v for k, v in fields.items() if k not in ("cache_dir", "grid_shard")})


def stored_config_hash(run_dir: Path) -> str:
    """config_hash of the run directory's config.json as written (a resumed run keeps the file it was started with,
    in the layout of the prefixlab that wrote it, so its groups' hashes keep matching)."""
    return config_hash(json.loads((Path(run_dir) / "config.json").read_text())["sweep"])


def start_dirs(paths: dict) -> list[Path]:
    """Creates each {field: directory} that is missing and checks that files can be written in it; returns the
    folders it created. On a refusal (SweepError naming the field) the folders it created are removed again."""
    created = []
    try:
        for field, path in paths.items():
            try:
                created += make_dirs(path)
                probe = Path(path) / f".write-test-{os.getpid()}-{threading.get_ident()}"  # threads: lanes
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                os.unlink(probe)
            except OSError as e:
                raise SweepError(f"{field} {path} is not a writable directory ({e.strerror or e})", field) from None
    except BaseException:
        unmake(created)
        raise
    return created


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
    """Checks the run directory against the request before anything is computed or changed (its config.json,
    manifest.json and results.jsonl by schema, every path the manifest names, the configuration its finished
    groups ran under); returns the config to run."""
    if resume and force:
        raise SweepError("resume and force exclude each other")
    if resume:
        stored = load_config(run_dir)
        if config is not None:
            diff = config.resolved().differences(stored)
            if diff:
                raise SweepError(f"cannot resume {run_dir}: {', '.join(diff)} differ from its config.json",
                                 diff[0])
        groups = Manifest(run_dir).data["groups"]
        for g, e in groups.items():
            if e["checkpoint"]:
                group_dir(run_dir, g)  # refused here if it leads outside, before anything changes
        current = stored_config_hash(run_dir)
        stale = [g for g, e in groups.items() if e.get("config_hash", current) != current]
        if stale:
            raise SweepError(f"cannot resume {run_dir}: its config.json is not the configuration group {stale[0]} "
                             "finished under (edited?); put the old one back, or run the sweep into a new directory",
                             "out")
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
        sweep_files(run_dir)  # every entry checked before anything is deleted
    return config.resolved()


def sweep_files(run_dir: Path) -> list[Path]:
    """What the manifest says a sweep wrote, with the spares a kill can leave beside each, every one confined to
    the run directory; a manifest entry that leads outside it, or names it, is a SweepError naming the entry."""
    manifest = Manifest(run_dir)
    try:
        paths = [inside(run_dir, rel, str(manifest.path)) for rel in manifest.data["written"]]
    except UnsafePath as e:
        raise SweepError(f"{manifest.path}: {e}; nothing was deleted", "out") from None
    return [p.with_name(p.name + s) for p in paths for s in ("", ".partial", ".saving", ".old")]


def remove_sweep_files(run_dir: Path) -> None:
    """Removes what the manifest says a sweep wrote (links themselves, never their targets), then empty folders.
    Every entry is checked first (sweep_files): one that leads outside the run directory deletes nothing."""
    for path in sweep_files(run_dir):
        remove(path)
    ckpt_dir = run_dir / "ckpt"
    if ckpt_dir.is_dir() and not ckpt_dir.is_symlink():
        for d in [*sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and not p.is_symlink())), ckpt_dir]:
            if not any(d.iterdir()):
                d.rmdir()


def group_dir(run_dir: Path, group: str) -> Path:
    """ckpt/<group>, confined to the run directory."""
    try:
        return inside(run_dir, f"ckpt/{group}")
    except UnsafePath as e:
        raise SweepError(str(e), "out") from None


def complete_groups(run_dir: Path, records: list[dict], report) -> set[str]:
    """The manifest's groups whose records are all in `records` and whose checkpoint (if any) is intact; reads
    only. report(problem, group) hears of each damaged checkpoint."""
    counts = Counter(r["group"] for r in records)
    done = set()
    for group, entry in Manifest(run_dir).data["groups"].items():
        if counts.get(group) != entry["records"]:
            continue
        if entry["checkpoint"]:
            d = group_dir(run_dir, group)
            try:
                if not ckpt.exists(d):
                    raise ckpt.CheckpointError(f"{d}: checkpoint missing")
                ckpt.verify(d)
            except ckpt.CheckpointError as e:
                report(str(e), group)
                continue
        done.add(group)
    return done


def done_groups(run_dir: Path, log) -> set[str]:
    """Groups whose records are all in results.jsonl, as the manifest counts them, and whose checkpoint is intact.
    Records of any other group (a torn line, a group cut short, a damaged checkpoint) are dropped from
    results.jsonl, so that group runs again and nothing is doubled. A damaged results.jsonl (a line that is not
    JSON before the last, a record of the wrong shape) is a SweepError naming the line, with nothing changed."""
    results = run_dir / "results.jsonl"
    manifest = Manifest(run_dir)
    checkpoints = [group_dir(run_dir, g) for g, e in manifest.data["groups"].items() if e["checkpoint"]]
    try:
        records = read_jsonl_repairing(results, log, check=True) if results.exists() else []
    except ValueError as e:
        raise SweepError(f"cannot resume: {e}", "out") from None
    for d in checkpoints:
        ckpt.recover(d)  # a save a kill interrupted
    done = complete_groups(run_dir, records, lambda problem, group: log(f"{problem}; group {group} runs again"))
    keep = [r for r in records if r["group"] in done]
    if len(keep) < len(records) or results.is_symlink():  # a link is replaced by the records, never written through
        dropped = sorted({r["group"] for r in records} - done)
        if dropped:
            log(f"{results}: {len(records) - len(keep)} record(s) of unfinished group(s) {', '.join(dropped)} "
                "removed; they run again")
        replace_bytes(results, "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in keep).encode())
    for group in set(manifest.data["groups"]) - done:
        del manifest.data["groups"][group]
    manifest.save()
    return done


def write_config(config: SweepConfig, run_dir: Path) -> None:
    ckpt.write_json_atomic(run_dir / "config.json", {
        "config_version": CONFIG_VERSION, "sweep": config.to_dict(),
        "model_config": dataclasses.asdict(config.model_config), "variant": config.task_variant.name,
        "jax_version": jax.__version__, "devices": [str(d) for d in jax.devices()]})
