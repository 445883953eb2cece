"""A run directory from someone else: whatever its manifest names and wherever its links point, `--force`,
`merge.py --force` and `--resume` change nothing outside it; a crafted entry is refused in one line before anything
is deleted (prefixlab/run_dir.py with prefixlab/safe_paths.py)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from prefixlab.run_dir import remove_sweep_files
from prefixlab.sweep import run_sweep
from tests.helpers import load_script
from tests.test_sweep import SWEEP, sweep_in_process

MERGE = Path(__file__).resolve().parent.parent / "scripts" / "merge.py"


def snapshot(root: Path) -> dict:
    """Every file's bytes and every link's target under root, links not followed."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            out[p] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


@pytest.fixture
def world(reference_sweep, tmp_path):
    """tmp/run (a copy of the reference sweep, sharing its cache) beside the user's own files: tmp/victim.txt and
    tmp/outside/ (a folder with a file)."""
    _, _, ref = reference_sweep
    run = tmp_path / "run"
    shutil.copytree(ref / "run", run)
    (tmp_path / "victim.txt").write_text("keep")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "precious.txt").write_text("keep")
    return run


def set_manifest(run: Path, **changes):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(changes)
    (run / "manifest.json").write_text(json.dumps(manifest))


def crafted_entries(run: Path) -> list[str]:
    """Manifest entries that lead outside the run directory, or name it: relative, absolute, through links."""
    tmp = run.parent
    (run / "escape").symlink_to(tmp / "outside")  # a link at the first level
    (run / "ckpt" / "add1" / "escape").symlink_to(tmp / "outside")  # and deeper
    return ["../victim.txt", "../outside", "ckpt/../../victim.txt", str(tmp / "victim.txt"), str(tmp / "outside"),
            ".", "./", "escape/precious.txt", "ckpt/add1/escape/precious.txt"]


def test_force_and_merge_force_refuse_every_crafted_entry_and_change_nothing(world, capsys):
    tmp = world.parent
    shard = one_shard(world)
    written = json.loads((world / "manifest.json").read_text())["written"]
    for entry in crafted_entries(world):
        set_manifest(world, written=[*written, entry])
        before = snapshot(tmp)
        rc, err = sweep_in_process("--model", "tiny", "--force", "--out", str(world), "--cache-dir",
                                   str(tmp / "cache"), capsys=capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "manifest.json" in err, (entry, err)
        try:
            load_script(MERGE).main([str(shard), "--out", str(world), "--force"])
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "manifest.json" in err, err
        assert snapshot(tmp) == before, entry


def test_force_removes_a_link_it_wrote_never_what_it_points_to(world):
    tmp = world.parent
    shutil.rmtree(world / "plots")
    (world / "plots").symlink_to(tmp / "outside")  # entry "plots" names the link itself
    (world / "ckpt" / "base").rename(tmp / "outside" / "base")
    (world / "ckpt" / "base").symlink_to(tmp / "outside" / "base")
    outside = snapshot(tmp / "outside")
    remove_sweep_files(world)
    assert snapshot(tmp / "outside") == outside and not (world / "plots").exists() and (tmp / "victim.txt").exists()
    assert not (world / "results.jsonl").exists() and not (world / "ckpt").exists()


@pytest.mark.parametrize("craft", ["group name", "link on the way"])
def test_resume_refuses_a_group_outside_the_run_directory(world, capsys, craft):
    tmp = world.parent
    manifest = json.loads((world / "manifest.json").read_text())
    if craft == "group name":
        manifest["groups"]["../../outside"] = {"records": 0, "checkpoint": True}
        (world / "manifest.json").write_text(json.dumps(manifest))
        needle = "contains '..'"
    else:  # ckpt/add1 is a link out: recovering or rewriting a group's checkpoint would write there
        shutil.move(world / "ckpt" / "add1", tmp / "outside" / "add1")
        (world / "ckpt" / "add1").symlink_to(tmp / "outside" / "add1")
        needle = "outside"
    before = snapshot(tmp)
    rc, err = sweep_in_process("--resume", "--out", str(world), capsys=capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert snapshot(tmp) == before


def test_resume_replaces_a_linked_results_file_instead_of_writing_through_it(world):
    tmp = world.parent
    (world / "results.jsonl").rename(tmp / "outside" / "results.jsonl")
    (world / "results.jsonl").symlink_to(tmp / "outside" / "results.jsonl")
    for name in ("results.csv", "summary.md"):
        (world / name).unlink()
        (world / name).symlink_to(tmp / "victim.txt")
    outside = {**snapshot(tmp / "outside"), tmp / "victim.txt": b"keep"}
    records = run_sweep(None, world, resume=True, progress=False, log=lambda *a, **k: None)
    assert {**snapshot(tmp / "outside"), tmp / "victim.txt": (tmp / "victim.txt").read_bytes()} == outside
    assert not any((world / n).is_symlink() for n in ("results.jsonl", "results.csv", "summary.md"))
    assert len(records) == len((tmp / "outside" / "results.jsonl").read_text().splitlines())


def one_shard(run: Path) -> Path:
    """A copy of the run as the only grid shard of one (what merge.py reads)."""
    shard = run.parent / "shards" / "shard-0-of-1"
    shutil.copytree(run, shard)
    stored = json.loads((shard / "config.json").read_text())
    stored["sweep"]["grid_shard"] = [0, 1]
    (shard / "config.json").write_text(json.dumps(stored))
    return shard


@pytest.mark.parametrize("damage", ["interrupted save", "garbage line"])
def test_merge_and_load_run_only_read(world, capsys, damage):
    from prefixlab.analysis import load_run

    shard = one_shard(world)
    if damage == "interrupted save":  # only a writer (resume) may put it back
        group = shard / "ckpt" / "add1" / "prefix-sample_vocab"
        group.rename(group.with_name(group.name + ".old"))
    else:
        lines = (shard / "results.jsonl").read_text().splitlines(keepends=True)
        (shard / "results.jsonl").write_text("".join(lines[:2] + ["garbage\n"] + lines[2:]))
    before = snapshot(shard)
    try:
        load_script(MERGE).main([str(shard), "--out", str(world.parent / "merged")])
    except SystemExit as e:
        assert e.code == 2
    err = capsys.readouterr().err
    if damage == "garbage line":  # skipped with a warning naming it; every record is there, so the merge goes on
        assert "line 3: not JSON" in err and "skipped" in err
        assert (world.parent / "merged" / "results.jsonl").read_text() == (world / "results.jsonl").read_text()
    else:
        assert "is unfinished" in err and not (world.parent / "merged").exists()
    load_run(shard)
    assert snapshot(shard) == before
