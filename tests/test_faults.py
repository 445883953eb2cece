"""Fault injection on the tiny model: each case ends as documented, and no result is lost or doubled."""

import errno
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


# --- issue 34: a run directory or cache from someone else; damaged state; divergence; resources; memory ---------

def _dump(obj) -> str:
    """JSON as prefixlab writes it (so a resume that rewrites the file unchanged writes the same bytes)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


@pytest.fixture
def own(finished, tmp_path):
    """A copy of the finished run with its own copy of the cache (config.json points to it), to damage freely."""
    shutil.copytree(finished / "run", tmp_path / "run")
    shutil.copytree(finished / "cache", tmp_path / "cache")
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    stored["sweep"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "run" / "config.json").write_text(_dump(stored))
    return tmp_path / "run"


def _edit_json(path, edit):
    obj = json.loads(path.read_text())
    path.write_text(_dump(edit(obj)))


def _edit_lines(path, edit):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


def _set(obj, keys, value):
    inner = obj
    for k in keys[:-1]:
        inner = inner[k]
    if value is KeyError:
        del inner[keys[-1]]
    else:
        inner[keys[-1]] = value
    return obj


_BAD_RECORD = lambda lines: lines[:1] + [json.dumps({**json.loads(lines[1]), "exact_match": "high"}) + "\n"] + lines[2:]
DAMAGE = {  # class: (file, edit, what the one line must say)
    "config.json not an object": ("config.json", lambda o: [o], "a JSON object expected, got a list"),
    "config.json wrong type": ("config.json", lambda o: _set(o, ["sweep", "seeds"], "2"), "seeds must be an integer"),
    "config.json missing key": ("config.json", lambda o: _set(o, ["sweep"], KeyError), "field 'sweep' is missing"),
    "config.json edited by hand": ("config.json", lambda o: _set(o, ["sweep", "eval_samples"], 40),
                                   "not the configuration group add1/none finished under"),
    "manifest.json wrong type": ("manifest.json", lambda o: _set(o, ["groups"], []), "'groups' must be a JSON object"),
    "manifest.json missing key": ("manifest.json", lambda o: _set(o, ["written"], KeyError), "'written' is missing"),
    "manifest.json group entry": ("manifest.json", lambda o: _set(o, ["groups", "add1/none", "records"], "2"),
                                  "'records' must be an integer >= 0"),
    "results.jsonl garbage line": ("results.jsonl", lambda lines: lines[:2] + ["#garbage\n"] + lines[2:],
                                   "line 3: not JSON"),
    "results.jsonl wrong-schema record": ("results.jsonl", _BAD_RECORD, "line 2: field 'exact_match' must be"),
    "results.jsonl record without group": ("results.jsonl", lambda lines: [json.dumps(
        {k: v for k, v in json.loads(lines[0]).items() if k != "group"}) + "\n"] + lines[1:], "record without group"),
    "cached base meta.json": ("meta.json", lambda o: _set(o, ["wall_s"], "slow"), "'wall_s' must be a finite number"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_state_is_one_line_exit_2_and_nothing_changes(own, damage, capsys):
    from tests.test_sweep import sweep_in_process, tree_bytes

    name, edit, needle = DAMAGE[damage]
    path = next((own.parent / "cache").glob("base-*/seed-0/meta.json")) if name == "meta.json" else own / name
    (_edit_lines if name.endswith(".jsonl") else _edit_json)(path, edit)
    before = {**tree_bytes(own), **tree_bytes(own.parent / "cache")}
    rc, err = sweep_in_process("--resume", "--out", str(own), capsys=capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert name in err  # names the file
    assert {**tree_bytes(own), **tree_bytes(own.parent / "cache")} == before  # the finished records survive


def test_a_non_finite_cached_base_is_refused_with_how_to_remove_it(own, capsys):
    import jax
    import numpy as np

    from prefixlab import checkpoint as ckpt
    from tests.test_sweep import sweep_in_process

    seed = next((own.parent / "cache").glob("base-*/seed-0"))
    meta, tree = ckpt.read_meta(seed), ckpt.restore(seed, _like(seed))
    tree["params"] = jax.tree.map(lambda x: np.full_like(np.asarray(x), np.nan), tree["params"])
    ckpt.save(seed, tree, {k: v for k, v in meta.items() if k not in ("format", "files")})  # checksums agree
    rc, err = sweep_in_process("--resume", "--out", str(own), capsys=capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "cached base is not finite" in err and f"remove {seed} to retrain" in err


def _like(seed_dir):
    import jax

    from prefixlab.model import abstract_model

    _, abstract = abstract_model(config(seed_dir.parent.parent).model_config)
    return {"params": abstract, "losses": jax.ShapeDtypeStruct((20,), "float32")}


def test_a_pretraining_that_diverges_is_recorded_not_cached(tmp_path, capsys):
    from tests.test_sweep import rows, sweep_in_process

    out, cache = tmp_path / "run", tmp_path / "cache"
    rc, _ = sweep_in_process("--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none,prefix",
                             "--pretrain-steps", "10", "--tune-steps", "5", "--seeds", "1", "--eval-samples", "20",
                             "--chunk", "5", "--lr-grid", "1", "--lr", "1e30", "--quiet", "--out", str(out),
                             "--cache-dir", str(cache), capsys=capsys)
    assert rc == 0
    records = rows(out)
    assert {r["method"] for r in records} == {"none", "prefix"}
    assert all(r["status"] == "diverged" and r["exact_match"] is None for r in records)
    assert "| diverged |" in (out / "summary.md").read_text()
    assert list(cache.glob("base-*/seed-*")) == []  # nothing non-finite (nothing at all) cached as good
    assert not (out / "ckpt" / "base" / "seed-0").exists()


def test_python_api_arguments_are_checked_before_anything_runs(tmp_path):
    good = config(tmp_path / "cache")
    for call, field in [(lambda: run_sweep(good, 3), "run_dir"),
                        (lambda: run_sweep(good, tmp_path / "x", resume="yes"), "resume"),
                        (lambda: run_sweep(good, tmp_path / "x", save_every=float("nan")), "save_every"),
                        (lambda: run_sweep({"model": "tiny"}, tmp_path / "x"), "config"),
                        (lambda: SweepConfig(model="tiny", seeds=2.0), "seeds"),
                        (lambda: SweepConfig(model="tiny", prefix_lengths=(1.5,)), "prefix_lengths"),
                        (lambda: SweepConfig(model="tiny", tasks=()), "tasks")]:
        with pytest.raises(SweepError) as e:
            call()
        assert e.value.field == field and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_start_leaves_no_folder_behind(finished, tmp_path, capsys, monkeypatch):
    """--out under a file: the cache folder made a moment before is removed again. One entry of a writable cache
    denied (EACCES, simulated: tests run as root): one line naming it, no run directory."""
    from tests.test_sweep import sweep_in_process

    (tmp_path / "file").write_text("x")
    tiny = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none", "--quiet"]
    rc, err = sweep_in_process(*tiny, "--out", str(tmp_path / "file" / "run"), "--cache-dir",
                               str(tmp_path / "new" / "cache"), capsys=capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "new").exists()

    cache = tmp_path / "cache"
    shutil.copytree(finished / "cache", cache)
    (entry,) = cache.glob("base-*")
    real_open = os.open
    denied = lambda path, *a, **k: (_raise(errno.EACCES, path) if str(path).startswith(str(entry)) else
                                    real_open(path, *a, **k))
    monkeypatch.setattr(os, "open", denied)
    args = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none,prefix",
            "--prefix-lengths", "1", "--pretrain-steps", "20", "--tune-steps", "5", "--seeds", "2",
            "--eval-samples", "20", "--chunk", "5", "--lr-grid", "1", "--quiet"]
    rc, err = sweep_in_process(*args, "--out", str(tmp_path / "run"), "--cache-dir", str(cache), capsys=capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(entry) in err and "Permission denied" in err, err
    assert not (tmp_path / "run").exists()


def _raise(code, path):
    raise OSError(code, os.strerror(code), str(path))


@pytest.mark.parametrize("fault", ["ENOSPC appending a group's records", "EROFS putting a checkpoint in place"])
def test_a_full_or_read_only_disk_mid_sweep_is_one_line_and_resume_is_exact(finished, tmp_path, capsys, monkeypatch,
                                                                            fault):
    from tests.test_sweep import sweep_in_process

    out = tmp_path / "run"
    args = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none,prefix",
            "--prefix-lengths", "1", "--pretrain-steps", "20", "--tune-steps", "5", "--seeds", "2",
            "--eval-samples", "20", "--chunk", "5", "--lr-grid", "1", "--quiet", "--out", str(out),
            "--cache-dir", str(finished / "cache")]
    if fault.startswith("ENOSPC"):
        real, target, code = os.write, out / "results.jsonl", errno.ENOSPC
        appends = []

        def fake(fd, data):
            if os.path.realpath(f"/proc/self/fd/{fd}") == str(target):
                appends.append(fd)
                if len(appends) == 2:  # the second group's records: the disk is full
                    return real(fd, data[: len(data) // 2])
            return real(fd, data)
        monkeypatch.setattr(os, "write", fake)
    else:
        real, target, code = os.rename, out / "ckpt" / "add1" / "prefix-sample_vocab", errno.EROFS
        fake = lambda src, dst, *a, **k: (_raise(code, dst) if str(dst) == str(target) else real(src, dst, *a, **k))
        monkeypatch.setattr(os, "rename", fake)
    rc, err = sweep_in_process(*args, capsys=capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and str(target) in err and os.strerror(code) in err, err
    assert len((out / "results.jsonl").read_text().splitlines()) == 2  # the first group's records, whole
    monkeypatch.undo()
    rc, err = sweep_in_process("--resume", "--out", str(out), capsys=capsys)
    assert rc == 0, err
    assert comparable(out) == comparable(finished / "run")


def test_memory_bound_covers_evaluation_and_is_checked_against_this_machine(tmp_path, capsys, monkeypatch):
    from prefixlab import sweep as sweep_module
    from tests.test_sweep import sweep_in_process

    rc, err = sweep_in_process("--eval-samples", "10000000000", "--out", str(tmp_path / "run"), "--cache-dir",
                               str(tmp_path / "cache"), capsys=capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--eval-samples" in err and "would fit" in err, err
    monkeypatch.setattr(sweep_module, "machine_memory", lambda: 2**30)  # a machine with 1 GiB
    import dataclasses

    small = config(tmp_path / "cache")
    with pytest.raises(SweepError, match=r"above this machine's 1.0 GiB; eval_samples up to [\d,]+ would fit"):
        run_sweep(dataclasses.replace(small, eval_samples=5_000_000), tmp_path / "run", **QUIET)
    assert list(tmp_path.iterdir()) == []
