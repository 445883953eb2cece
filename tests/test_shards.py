"""Grid shards (prefixlab/shards.py): N shards merged equal the unsharded sweep; merge refuses what is not one
sweep's N finished shards; SLURM array variables pick the shard."""

import dataclasses
import json

import pytest

from prefixlab.shards import find_shards, merge_shards, shard_dir, slice_env
from prefixlab.sweep import SweepConfig, SweepError, run_sweep
from tests.conftest import REFERENCE_SWEEP
from tests.helpers import load_script

QUIET = dict(progress=False, log=lambda *a, **k: None)


def _config(tmp_path, **kw):
    return SweepConfig(**REFERENCE_SWEEP, cache_dir=str(tmp_path / "cache"), **kw)


def _without_timings(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


@pytest.fixture(scope="module")
def sharded(reference_sweep):
    config, whole, tmp = reference_sweep
    for i in range(2):  # sharing the reference's base cache, as the jobs of an array do
        run_sweep(dataclasses.replace(config, grid_shard=(i, 2)), shard_dir(tmp / "exp", i, 2), **QUIET)
    return tmp, config, whole


def test_merged_shards_equal_the_unsharded_sweep(sharded):
    tmp, config, whole = sharded
    shards = find_shards(tmp / "exp")
    assert [p.name for p in shards] == ["shard-0-of-2", "shard-1-of-2"]
    assert [len(json.loads((d / "manifest.json").read_text())["groups"]) for d in shards] == [2, 1]
    merged = merge_shards(shards, tmp / "merged", **{"log": QUIET["log"]})
    assert len(merged) == len(whole) == 2 * (1 + 2 + 1)  # seeds x (none, prefix P=1,2, lora)
    assert _without_timings(merged) == _without_timings(whole)
    stored = json.loads((tmp / "merged" / "config.json").read_text())["sweep"]
    assert "grid_shard" not in stored and SweepConfig.from_dict(stored) == config.resolved()
    assert (tmp / "merged" / "summary.md").is_file()
    # the merged directory is a run directory like any other: a second merge into it needs force
    with pytest.raises(SweepError, match="already exists"):
        merge_shards(shards, tmp / "merged", **{"log": QUIET["log"]})


def test_merge_refuses_a_missing_or_foreign_shard(sharded, tmp_path):
    tmp, config, _ = sharded
    shards = find_shards(tmp / "exp")
    with pytest.raises(SweepError, match=r"shard\(s\) 1/2 missing"):
        merge_shards([shards[0]], tmp_path / "m1")
    with pytest.raises(SweepError, match="is not a grid shard"):
        merge_shards([*shards, tmp / "run"], tmp_path / "m2")
    other = run_sweep(dataclasses.replace(config, tune_steps=10, grid_shard=(1, 2)), tmp_path / "other", **QUIET)
    assert other
    with pytest.raises(SweepError, match="another sweep: tune_steps differ"):
        merge_shards([shards[0], tmp_path / "other"], tmp_path / "m3")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m3").exists()


def test_merge_refuses_an_unfinished_shard(sharded, tmp_path):
    import shutil

    tmp, _, _ = sharded
    copies = [shutil.copytree(d, tmp_path / d.name) for d in find_shards(tmp / "exp")]
    lines = (copies[0] / "results.jsonl").read_text().splitlines(keepends=True)
    (copies[0] / "results.jsonl").write_text("".join(lines[:-1]))  # its last group lost a record
    with pytest.raises(SweepError, match=r"shard 0/2 .* is unfinished: 1 of 2 groups done.*--resume"):
        merge_shards(copies, tmp_path / "merged")


def test_shard_settings_are_checked(tmp_path):
    with pytest.raises(SweepError, match="0 <= i < N"):
        _config(tmp_path, grid_shard=(3, 3))
    with pytest.raises(SweepError, match="only 3 group"):
        _config(tmp_path, grid_shard="0/4")
    with pytest.raises(SweepError, match="i/N"):
        _config(tmp_path, grid_shard="half")


def test_slurm_array_variables_give_the_shard():
    assert slice_env({}) is None
    assert slice_env({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)
    assert slice_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}) == (2, 4)


def test_cli_grid_shard_needs_out(capsys, monkeypatch):
    from pathlib import Path

    sweep = load_script(Path(__file__).resolve().parent.parent / "scripts" / "sweep.py")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    with pytest.raises(SystemExit) as e:
        sweep.main(["--model", "tiny"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--grid-shard needs --out" in err and len(err.strip().splitlines()) == 1
