"""Fault injection on the tiny model: each case ends as documented, and no result is lost or doubled."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prefixlab.checkpoint import CheckpointError
from prefixlab.locks import PidLock
from prefixlab.sweep import SweepConfig, SweepError, run_sweep

QUIET = dict(progress=False, log=lambda *a, **k: None)


def config(cache):
    return SweepConfig(model="tiny", pretrain="add1", tasks=("add1",), methods=("none", "prefix"),
                       prefix_lengths=(1,), pretrain_steps=20, tune_steps=5, seeds=2, eval_samples=20, chunk=5,
                       lr_grid=(1.0,), cache_dir=str(cache))


def comparable(run):
    lines = (run / "results.jsonl").read_text().splitlines()
    return sorted(json.dumps({k: v for k, v in json.loads(line).items() if k != "wall_s"}, sort_keys=True)
                  for line in lines)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run (groups add1/none, add1/prefix; 4 records) and its cache."""
    root = tmp_path_factory.mktemp("finished")
    run_sweep(config(root / "cache"), root / "run", **QUIET)
    return root


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, sharing its base cache."""
    shutil.copytree(finished / "run", tmp_path / "run")
    return tmp_path / "run"


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_torn_last_line_reruns_its_group(finished, run):
    data = (run / "results.jsonl").read_bytes()
    (run / "results.jsonl").write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 40])  # cut inside the last line
    run_sweep(None, run, resume=True, **QUIET)
    assert comparable(run) == comparable(finished / "run")


def test_records_without_their_manifest_entry_are_not_doubled(finished, run):
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["groups"]["add1/prefix-sample_vocab"]  # as if killed between the append and the manifest update
    (run / "manifest.json").write_text(json.dumps(manifest))
    run_sweep(None, run, resume=True, **QUIET)
    assert comparable(run) == comparable(finished / "run")


def test_a_deleted_checkpoint_file_reruns_its_group(finished, run):
    victim = next(p for p in sorted((run / "ckpt" / "add1" / "prefix-sample_vocab" / "arrays").rglob("*")) if p.is_file())
    victim.unlink()
    logs = []
    run_sweep(None, run, resume=True, progress=False, log=lambda *a, **k: logs.append(" ".join(map(str, a))))
    assert any(victim.name in line and "missing" in line for line in logs)
    assert comparable(run) == comparable(finished / "run")
    from prefixlab.analysis import load_run
    load_run(run).model("add1", "prefix", 0)  # restorable again


def test_flipped_bytes_in_a_cached_base_are_named(finished, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(finished / "cache", cache)
    data_file = max((p for p in cache.rglob("seed-0/arrays/**/*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(b ^ 0xFF for b in raw[len(raw) // 2: len(raw) // 2 + 64])
    data_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="damaged.*remove .*seed-0 to retrain"):
        run_sweep(config(cache), tmp_path / "run", **QUIET)


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(finished, run):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "sweep.lock").write_text(f"{holder.pid}\n")
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        with pytest.raises(SweepError, match=f"in use by process {holder.pid}"):
            run_sweep(None, run, resume=True, **QUIET)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    (run / "sweep.lock").write_text(f"{dead_pid()}\n")
    run_sweep(None, run, resume=True, **QUIET)
    assert comparable(run) == comparable(finished / "run") and not (run / "sweep.lock").exists()


def test_a_lock_waiter_gets_the_entry_once_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    (tmp_path / "train.lock").write_text(f"{holder.pid}\n")
    waited = []
    try:
        with PidLock(tmp_path / "train.lock", wait=True, on_wait=waited.append, poll_s=0.1):
            assert (tmp_path / "train.lock").read_text().strip() == str(os.getpid())
    finally:
        holder.wait()
    assert waited == [holder.pid] and not (tmp_path / "train.lock").exists()


def test_unwritable_paths_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match="cache_dir .* not a writable directory"):
        run_sweep(config(tmp_path / "file"), tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()
    with pytest.raises(SweepError, match="out .* not a writable directory"):
        run_sweep(config(tmp_path / "cache"), tmp_path / "file" / "run", **QUIET)
    with pytest.raises(SweepError, match="is a file"):
        run_sweep(config(tmp_path / "cache"), tmp_path / "file", **QUIET)


def test_force_refuses_a_foreign_directory(tmp_path):
    mine = tmp_path / "project" / "ckpt" / "myproject" / "weights.bin"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"precious")
    with pytest.raises(SweepError, match="not a prefixlab run directory"):
        run_sweep(config(tmp_path / "cache"), tmp_path / "project", force=True, **QUIET)
    assert mine.read_bytes() == b"precious"


def test_force_removes_only_the_sweeps_files_and_no_link_target(finished, run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "figure.png").write_bytes(b"keep")
    shutil.rmtree(run / "plots")
    (run / "plots").symlink_to(elsewhere)
    (run / "notes.txt").write_text("mine")
    run_sweep(config(finished / "cache"), run, force=True, **QUIET)
    assert (elsewhere / "figure.png").read_bytes() == b"keep" and (run / "notes.txt").read_text() == "mine"
    assert comparable(run) == comparable(finished / "run")


def test_an_interrupt_between_chunks_saves_the_last_completed_chunk():
    """train_chunks on KeyboardInterrupt: ResumeSaves saves the last completed chunk's state (not the cut-off one)."""
    import numpy as np

    from prefixlab.host_loop import ResumeSaves, train_chunks

    class Store:
        every_s, saves = 1e6, []

        def save(self, trainable, opt_state, done, losses, extra=None):
            self.saves.append((trainable, opt_state, done, losses.copy()))

    calls = []

    def chunk_fn(trainable, opt_state, steps_U):
        calls.append(int(steps_U[0]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # inside the third chunk's computation
        return trainable + 1, opt_state + 10, np.asarray(steps_U, np.float32)

    store = Store()
    with pytest.raises(KeyboardInterrupt):
        train_chunks(chunk_fn, 0, 0, (), steps=20, chunk=4, callbacks=[ResumeSaves(store, 20)])
    assert calls == [0, 4, 8] and len(store.saves) == 1
    trainable, opt_state, done, losses = store.saves[0]
    assert (trainable, opt_state, done) == (2, 20, 8) and losses.tolist() == list(range(8))


def test_an_unwritable_out_or_cache_dir_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A path no one can write, root included: procfs takes no new files or directories."""
    from tests.test_sweep import sweep_in_process

    blocked = Path("/proc/prefixlab-test")
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here: no path that root cannot write")
    try:
        blocked.mkdir()
    except OSError:
        pass
    else:
        blocked.rmdir()
        pytest.skip("/proc takes new directories here")
    tiny = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none", "--quiet"]
    for out, cache, field in [(tmp_path / "run", blocked / "cache", "--cache-dir"),
                              (blocked / "run", tmp_path / "cache", "--out")]:
        rc, err = sweep_in_process(*tiny, "--out", str(out), "--cache-dir", str(cache), capsys=capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{field} {blocked}" in err and "not a writable directory" in err
        assert not (tmp_path / "run").exists() and not [p for p in tmp_path.rglob("*") if p.is_file()]


RACE = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none,prefix", "--prefix-lengths",
        "1", "--pretrain-steps", "40", "--tune-steps", "10", "--seeds", "2", "--eval-samples", "20", "--chunk", "10",
        "--quiet"]


def test_two_sweeps_racing_for_one_base_train_it_once(tmp_path):
    from tests.test_sweep import SWEEP, rows, _comparable

    procs = [subprocess.Popen([sys.executable, str(SWEEP), *RACE, "--out", str(tmp_path / f"run{i}"), "--cache-dir",
                               str(tmp_path / "cache")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    logs = [out for out, _ in outs]
    assert sum("pretrained and stored" in log for log in logs) == 1
    assert sum("seeds [0, 1] restored, not retrained" in log for log in logs) == 1
    assert len(list((tmp_path / "cache").glob("base-*"))) == 1 and not any((tmp_path / "cache").rglob("*.partial"))
    assert _comparable(rows(tmp_path / "run0")) == _comparable(rows(tmp_path / "run1"))


def test_sigterm_saves_the_chunk_in_progress_and_resume_equals_uninterrupted(tmp_path):
    """--save-every 1e6: no timed save; the interrupt itself saves the last completed chunk of pretraining."""
    import re
    import signal
    import time

    from prefixlab.checkpoint import read_meta
    from tests.test_sweep import SWEEP, rows, _comparable

    args = [a for a in RACE if a != "--quiet"]
    args[args.index("--pretrain-steps") + 1], args[args.index("--chunk") + 1] = "400", "5"
    ref = subprocess.run([sys.executable, str(SWEEP), *args, "--quiet", "--out", str(tmp_path / "ref"),
                          "--cache-dir", str(tmp_path / "cache-ref")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out, cache, err_path = tmp_path / "run", tmp_path / "cache", tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, str(SWEEP), *args, "--save-every", "1e6", "--out", str(out),
                                 "--cache-dir", str(cache)], stdout=subprocess.DEVNULL, stderr=err)
        start = time.time()
        # the progress bar (stderr) shows steps done: interrupt once 2 chunks are complete, well before the end
        while not any(10 <= int(n) < 300 for n in re.findall(r"(\d+)/400", err_path.read_text())):
            assert proc.poll() is None and time.time() - start < 240, err_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    last = err_path.read_text().strip().splitlines()[-1]
    assert last == (f"interrupted; finished groups and the training state of the last completed chunk are saved; "
                    f"continue with: python scripts/sweep.py --resume --out {out}")
    partial = next(cache.glob("base-*/seed-0-1.partial"))
    done = read_meta(partial)["done"]
    assert 10 <= done < 400 and done % 5 == 0
    r = subprocess.run([sys.executable, str(SWEEP), "--resume", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"\b{done}/400\b", r.stderr)  # the resumed pretraining bar starts at the saved chunk
    assert not partial.exists()
    assert _comparable(rows(out)) == _comparable(rows(tmp_path / "ref"))
