import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from prefixlab.sweep import SweepConfig

SWEEP = Path(__file__).resolve().parent.parent / "scripts" / "sweep.py"
TINY = ["--model", "tiny", "--pretrain", "add1", "--pretrain-steps", "30", "--tune-steps", "10", "--seeds", "2",
        "--eval-samples", "40", "--quiet"]


def sweep(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, str(SWEEP), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def sweep_in_process(*args, capsys):
    """(exit code, stderr) of scripts/sweep.py's main(args), run in this process."""
    from tests.helpers import load_script

    try:
        rc = load_script(SWEEP).main(list(args))
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def tree_bytes(path):
    return {p: p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "sort_up"], "unknown task 'sort_up'"),
    (["--pretrain", "sort_asc,,add1"], "malformed task list"),
    (["--methods", "prefix,adapter"], "unknown method"),
    (["--tune-steps", "0"], "--tune-steps must be >= 1"),
    (["--pretrain-steps", "0"], "--pretrain-steps must be >= 1"),
    (["--prefix-lengths", "1,x"], "comma list of integers"),
    (["--prefix-lengths", "1,65"], "--prefix-lengths up to 64"),
    (["--lora-targets", "q,z"], "unknown LoRA target"),
    (["--prefix-init", "normal,zeros"], "prefix init must be one of"),
    (["--tune-lr", "prompt=1e-3"], "has no learning rate"),
    (["--model", "huge"], "invalid choice"),
    (["--resume", "--force"], "exclude each other"),
    (["--resume"], "cannot resume"),
    (["--tasks", "add1,add2", "--tune-tasks", "sort_asc"], "--tune-tasks must be tasks of --tasks"),
    (["--tune-tasks", "add1,,add2"], "malformed task list"),
    (["--lr", "nan"], "--lr must be a finite positive number"),
    (["--tune-lr", "prefix=inf"], "--tune-lr values must be finite"),
    (["--lora-alpha", "-1"], "LoRA alpha must be a finite positive number"),
    (["--lora.rank", "0"], "LoRA rank must be >= 1"),
    (["--lora.rank", "1.5"], "--lora.rank needs an integer, got '1.5'"),
    (["--prefix_kv.projection", "maybe"], "--prefix_kv.projection needs true or false"),
    (["--lora.alpha", "1,2"], "share the tag"),
    (["--save-every", "nan"], "--save-every must be a finite number"),
    (["--seeds", "100000000"], "GiB by estimate"),
    (["--batch-size", "1000000000"], "GiB by estimate"),
])
def test_bad_flags_one_line_exit_2(args, needle, tmp_path, capsys):
    rc, err = sweep_in_process(*args, "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "cache"),
                               capsys=capsys)
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "cache").exists()


def test_existing_directory_is_refused_and_unchanged(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text('{"keep": 1}\n')
    before = tree_bytes(out)
    r = sweep("--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert tree_bytes(out) == before


def test_tiny_end_to_end_then_base_reused(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    r = sweep(*TINY, "--tasks", "add1,sort_asc+add1", "--methods", "none,prefix,lora", "--prefix-lengths", "1,2",
              "--prefix-init", "normal,sample_vocab", "--out", str(out), "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    got = rows(out)
    # per task: none (2 seeds) + prefix (2 inits x 2 lengths x 3 lrs x 2 seeds) + lora (3 lrs x 2 seeds)
    assert len(got) == 2 * (2 + 24 + 6)
    by_setting = {}
    for row in got:
        by_setting.setdefault((row["task"], row["group"], row["context_len"], row["seed"]), []).append(row)
    assert all(sum(r["selected"] for r in rs) == 1 for rs in by_setting.values())  # one rate each, on validation
    assert {len(rs) for (_, g, _, _), rs in by_setting.items() if not g.endswith("/none")} == {3}
    required = {"pretrain", "task", "method", "seed", "steps", "trainable_params", "final_loss", "exact_match",
                "token_accuracy", "wall_s", "context_len", "lr", "status", "group", "loss_curve"}
    assert all(required <= set(row) for row in got)
    # each method's own settings, as it names them, and no other method's
    assert all(r["lora_rank"] == 1 and r["lora_targets"] == "q,k,v,o,fc,proj" for r in got if r["method"] == "lora")
    assert {r["init"] for r in got if r["method"] == "prefix"} == {"normal", "sample_vocab"}
    assert not any("lora_rank" in r or "init" in r for r in got if r["method"] == "none")
    assert {r["method"] for r in got} == {"none", "prefix", "lora"}
    assert all(0 <= r["exact_match"] <= 1 for r in got)
    # every tuned run is also scored on the other task
    assert all(set(r["cross_exact_match"]) == {"add1", "sort_asc+add1"} - {r["task"]} for r in got)
    assert json.loads((out / "config.json").read_text())["sweep"]["model"] == "tiny"
    assert (out / "results.csv").read_text().count("\n") == len(got) + 1
    summary = (out / "summary.md").read_text()
    assert "| add1 | prefix | 2 |" in summary and "| add1 | prefix-sample_vocab | 2 |" in summary
    assert all((out / "plots" / name).stat().st_size > 0
               for name in ("accuracy_vs_length.png", "loss_curves.png", "accuracy_vs_params.png"))
    assert (out / "ckpt" / "base" / "seed-1" / "meta.json").exists()
    assert (out / "ckpt" / "add1" / "prefix" / "meta.json").exists()
    assert (out / "ckpt" / "add1" / "prefix-sample_vocab" / "meta.json").exists()
    assert "exact match" in r.stdout and "pretrained and stored" in r.stdout

    # same pretraining configuration, other tasks: the base comes from the cache; --tune-tasks tunes on add1 only,
    # while the base is scored on both tasks and the add1 prefixes also on sort_asc
    r2 = sweep(*TINY, "--tasks", "sort_asc,add1", "--tune-tasks", "add1", "--methods", "none,prefix",
               "--out", str(tmp_path / "run2"), "--cache-dir", str(cache))
    assert r2.returncode == 0, r2.stderr
    assert "restored, not retrained" in r2.stdout and "pretrained and stored" not in r2.stdout
    got2 = rows(tmp_path / "run2")
    assert sorted((r["task"], r["method"]) for r in got2) == sorted(
        [("sort_asc", "none")] * 2 + [("add1", "none")] * 2 + [("add1", "prefix")] * 6)  # 3 rates x 2 seeds
    assert all(set(r["cross_exact_match"]) == {"sort_asc"} for r in got2 if r["method"] == "prefix")
    none_before = {r["seed"]: r["final_loss"] for r in got if r["method"] == "none"}
    assert {r["seed"]: r["final_loss"] for r in got2 if r["method"] == "none"} == none_before


def test_corrupt_base_checkpoint_is_named(tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, "--tasks", "add1", "--methods", "none", "--cache-dir", str(cache)]
    assert sweep(*args, "--out", str(tmp_path / "a")).returncode == 0
    for f in cache.rglob("seed-0/arrays/**/*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(b"\0garbage" * 10)
    before = tree_bytes(tmp_path / "a")
    r = sweep(*args, "--out", str(tmp_path / "b"))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "seed-0" in err[0] and "damaged (checksum mismatch)" in err[0] and "remove" in err[0]
    assert tree_bytes(tmp_path / "a") == before


def _wait_for(predicate, proc, timeout=240):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        assert time.time() - start < timeout
        time.sleep(0.05)


def _comparable(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


@pytest.mark.slow  # docs/performance.md: the slow run
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    args = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1,sort_asc", "--methods", "none,prefix,lora",
            "--pretrain-steps", "120", "--tune-steps", "120", "--chunk", "10", "--seeds", "2", "--prefix-lengths",
            "1,2", "--eval-samples", "40", "--save-every", "0", "--quiet"]
    ref = tmp_path / "ref"
    assert sweep(*args, "--out", str(ref), "--cache-dir", str(tmp_path / "cache-ref")).returncode == 0

    out, cache = tmp_path / "run", tmp_path / "cache"  # not the default cache
    cmd = [sys.executable, str(SWEEP), *args, "--out", str(out), "--cache-dir", str(cache)]
    env = {k: v for k, v in os.environ.items() if k != "PREFIXLAB_CACHE"}
    # kill 1: in the middle of pretraining (a saved chunk exists, the base does not)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, env=env)
    _wait_for(lambda: any(cache.glob("*/*.partial/meta.json")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any(cache.glob("*/seed-0/meta.json"))
    # kill 2: after a finished group, in the middle of a tuning group; no --cache-dir: the stored cache is used
    proc = subprocess.Popen([sys.executable, str(SWEEP), "--resume", "--out", str(out), "--save-every", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path, env=env)
    _wait_for(lambda: (out / "results.jsonl").exists() and any(out.glob("ckpt/*/*.partial/meta.json")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(rows(out))
    assert 0 < n_done < len(rows(ref))
    assert not (tmp_path / "runs").exists()  # the default cache (cwd/runs/base-cache) was never used
    assert not any(cache.glob("*/*.partial"))  # the pretraining chunk was continued and cleared

    r = sweep("--resume", "--out", str(out), "--cache-dir", str(cache))  # the same cache, given: accepted
    assert r.returncode == 0, r.stderr
    assert "already done" in r.stdout
    assert _comparable(rows(out)) == _comparable(rows(ref))


def test_resume_refuses_a_flag_that_differs(tmp_path):
    out = tmp_path / "run"
    assert sweep(*TINY, "--tasks", "add1", "--methods", "none", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")).returncode == 0
    before = tree_bytes(out)
    for extra, flag in [(["--methods", "none,prefix"], "--methods"),
                        (["--model", "paper-exp1"], "--model"),  # the default value, given explicitly: still refused
                        (["--cache-dir", "elsewhere"], "--cache-dir"), (["--no-cross-eval"], "--no-cross-eval")]:
        r = sweep("--resume", "--out", str(out), *extra)
        assert r.returncode == 2 and f"{flag} differ" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert tree_bytes(out) == before
    same = sweep("--resume", "--out", str(out), "--model", "tiny", "--methods", "none", "--quiet")
    assert same.returncode == 0 and "already done" in same.stdout


@pytest.mark.slow  # docs/performance.md: the slow run
def test_eight_devices_match_one(tmp_path):
    args = [*TINY, "--tasks", "add1", "--methods", "none,prefix,lora", "--prefix-lengths", "1,2,3", "--lr-grid", "1,10",
            "--chunk", "5"]  # validations after steps 5 and 10, with 6 runs padded to the 8 devices
    one = sweep(*args, "--out", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "c1"))
    eight = sweep(*args, "--out", str(tmp_path / "eight"), "--cache-dir", str(tmp_path / "c8"),
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert one.returncode == 0 and eight.returncode == 0, eight.stderr
    assert "8 cpu device(s)" in eight.stdout
    a, b = rows(tmp_path / "one"), rows(tmp_path / "eight")
    assert [r["group"] for r in a] == [r["group"] for r in b]
    for x, y in zip(a, b):
        assert x["exact_match"] == y["exact_match"] and x["token_accuracy"] == pytest.approx(y["token_accuracy"], abs=0.01)
        assert x["final_loss"] == pytest.approx(y["final_loss"], rel=1e-4)
        assert (x["steps_used"], x["stop_reason"]) == (y["steps_used"], y["stop_reason"])


@pytest.mark.parametrize("tune_lr, expected", [({}, [5e-4, 5e-3, 5e-2]), ({"prefix": 1e-2, "lora": 2e-3}, [2e-3])])
def test_match_params_lora_gets_a_learning_rate(tune_lr, expected):
    """--match-params adds LoRA groups when only `prefix` is in --methods; they once trained at LR 0."""
    config = SweepConfig(model="tiny", methods="prefix", prefix_lengths=(2,), match_params=True, tune_lr=tune_lr)
    assert [m.name for m in config.method_groups()] == ["prefix", "lora"]
    assert config.learning_rates("lora") == expected


def test_preset_sets_defaults_that_explicit_flags_override():
    from tests.helpers import load_script

    script = load_script(SWEEP)
    a = script.parse_flags(script.build_parser(), ["--preset", "minute", "--seeds", "3", "--pretrain", "add1"])
    config = SweepConfig(**script.config_fields(vars(a)))
    assert config == SweepConfig.preset("minute", seeds=3, pretrain="add1")
    assert (config.pretrain_steps, config.seeds, config.model) == (2000, 3, "paper-exp1")
    plain = script.parse_flags(script.build_parser(), [])
    assert SweepConfig(**script.config_fields(vars(plain))) == SweepConfig()  # no preset: the defaults


def test_a_shared_base_is_pretrained_once_and_tuned_on_by_every_seed(tmp_path):
    from prefixlab.analysis import load_run
    from prefixlab.sweep import run_sweep

    config = SweepConfig(model="tiny", pretrain="add1", tasks=("add1",), methods=("none", "prefix"), seeds=2,
                         pretrain_steps=30, tune_steps=10, eval_samples=40, lr_grid=(1.0,), shared_base=True,
                         cache_dir=str(tmp_path / "cache"))
    recs = run_sweep(config, tmp_path / "run", progress=False, log=lambda *a, **k: None)
    assert sorted(p.name for p in (tmp_path / "run" / "ckpt" / "base").iterdir()) == ["seed-0"]
    base = [r for r in recs if r["method"] == "none"]
    assert len(base) == 2 and base[0]["exact_match"] == base[1]["exact_match"]  # one base, scored twice
    assert [r["wall_s"] > 0 for r in sorted(base, key=lambda r: r["seed"])] == [True, False]  # counted once
    tuned = {r["seed"]: r["final_loss"] for r in recs if r["method"] == "prefix"}
    assert tuned[0] != tuned[1]  # each seed's runs are its own
    run = load_run(tmp_path / "run")
    assert run.seeds == [0, 1]
    for leaf0, leaf1 in zip(jax.tree.leaves(run.base(0)), jax.tree.leaves(run.base(1))):
        np.testing.assert_array_equal(leaf0, leaf1)
