"""Grid shards for job arrays: shard i of N runs the sweep's groups numbered i, i + N, ... into its own run
directory; `merge_shards` combines N finished shards into one run directory, the unsharded sweep's.

    # each array job (all share the base cache; the first to need a base trains it, the others wait for it)
    run_sweep(dataclasses.replace(config, grid_shard=(i, N)), shard_dir("runs/exp", i, N))
    # afterwards, once
    merge_shards(find_shards("runs/exp"), "runs/exp/merged")

Merged results.jsonl holds the records in the unsharded sweep's order; only timings (wall_s) differ from it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from prefixlab.sweep_report import write_report
from prefixlab.results import append_jsonl, read_jsonl
from prefixlab.run_dir import (Manifest, complete_groups, config_hash, lock, open_run_dir, remove_sweep_files,
                               write_config)
from prefixlab.safe_paths import inside, remove
from prefixlab.sweep_config import SweepConfig, SweepError, group_name, load_config

SHARD_NAME = re.compile(r"shard-(\d+)-of-(\d+)$")


def shard_dir(out, i: int, n: int) -> Path:
    """Where the CLI puts shard i of N of a sweep asked to write to `out`."""
    return Path(out) / f"shard-{i}-of-{n}"


def find_shards(parent) -> list[Path]:
    """The shard-<i>-of-<N> run directories inside `parent`, in shard order."""
    found = [p for p in Path(parent).iterdir() if p.is_dir() and SHARD_NAME.match(p.name)] if Path(parent).is_dir() else []
    if not found:
        raise SweepError(f"{parent}: no shard-<i>-of-<N> run directories in it", "out")
    return sorted(found, key=lambda p: int(SHARD_NAME.match(p.name).group(1)))


def slice_env(environ=os.environ) -> tuple[int, int] | None:
    """(i, N) of a SLURM job array task (SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN), or None."""
    if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
        return None
    try:
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        return int(environ["SLURM_ARRAY_TASK_ID"]) - first, int(environ["SLURM_ARRAY_TASK_COUNT"])
    except ValueError:
        raise SweepError("SLURM_ARRAY_TASK_ID / _COUNT / _MIN are not integers", "grid_shard") from None


def _shard_records(d: Path, log) -> list[dict]:
    """A shard's records, only read: a line that is not JSON is a warning naming it, and skipped (its group then
    counts as unfinished); a record of the wrong shape is a SweepError naming its line."""
    path = Path(d) / "results.jsonl"
    try:
        return read_jsonl(path, warn=lambda m: log(f"warning: {m}"), check=True, need_group=True) if path.exists() else []
    except ValueError as e:
        raise SweepError(str(e), "out") from None


def _check_shards(shard_dirs, log) -> tuple[SweepConfig, dict[int, Path], dict[Path, list[dict]]]:
    """The unsharded config, {i: directory} and each shard's records, after checking that the shards are one sweep's
    N finished parts. Reads only."""
    configs = {Path(d): load_config(d) for d in shard_dirs}
    unsharded = None
    by_index: dict[int, Path] = {}
    for d, config in configs.items():
        if config.grid_shard is None:
            raise SweepError(f"{d} is not a grid shard (its config.json has no grid_shard)", "out")
        whole = dataclasses.replace(config, grid_shard=None)
        if unsharded is not None and whole != unsharded:
            raise SweepError(f"{d} belongs to another sweep: {', '.join(whole.differences(unsharded))} differ", "out")
        unsharded = whole
        i, n = config.grid_shard
        if i in by_index:
            raise SweepError(f"shard {i}/{n} is given twice: {by_index[i]} and {d}", "out")
        by_index[i] = d
    n = next(iter(configs.values())).grid_shard[1]
    missing = sorted(set(range(n)) - set(by_index))
    if missing:
        raise SweepError(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing; merge needs all {n}", "out")
    records = {d: _shard_records(d, log) for d in by_index.values()}
    for i, d in by_index.items():
        expected = {group_name(*g) for g in configs[d].groups()}
        problems = []
        done = complete_groups(d, records[d], lambda problem, group: problems.append(problem))
        if done != expected:
            raise SweepError(f"shard {i}/{n} ({d}) is unfinished: {len(done & expected)} of {len(expected)} groups "
                             f"done{' (' + problems[0] + ')' if problems else ''}; finish it with "
                             f"scripts/sweep.py --resume --out {d}", "out")
    return unsharded, by_index, records


def _copy_in(source: Path, out: Path, entry: str) -> None:
    """Copies a shard's folder to out/entry, confined to `out` (whatever was there, a link included, goes first)."""
    dst = inside(out, entry)
    remove(dst)
    shutil.copytree(source, dst)


def merge_shards(shard_dirs, out, *, force: bool = False, log=print) -> list[dict]:
    """Writes the run directory `out` of the unsharded sweep from its N finished shards; returns its records.
    Shards are only read. Raises SweepError naming what is missing or inconsistent."""
    out = Path(out)
    config, by_index, shard_records = _check_shards(shard_dirs, log)
    config = open_run_dir(config, out, resume=False, force=force)
    records_of = {}
    for d in by_index.values():
        for r in shard_records[d]:
            records_of.setdefault(r["group"], []).append(r)
    out.mkdir(parents=True, exist_ok=True)
    with lock(out):
        if force:
            remove_sweep_files(out)
        manifest = Manifest(out)
        manifest.save()
        write_config(config, out)
        _copy_in(by_index[0] / "ckpt" / "base", out, "ckpt/base")
        entries = {g: (d, e) for d in by_index.values() for g, e in Manifest(d).data["groups"].items()}
        for group in (group_name(*g) for g in config.groups()):
            source, entry = entries[group]
            has_checkpoint = entry["checkpoint"]
            if has_checkpoint:
                manifest.wrote(f"ckpt/{group}")
                _copy_in(source / "ckpt" / group, out, f"ckpt/{group}")
            append_jsonl(out / "results.jsonl", records_of[group])
            manifest.group_done(group, len(records_of[group]), has_checkpoint, config_hash(config))
        records = read_jsonl(out / "results.jsonl")
        write_report(out, records)
    log(f"merged {len(by_index)} shards: {len(records)} results in {out / 'results.jsonl'}; summary.md, "
        "results.csv and plots/ beside it")
    return records
