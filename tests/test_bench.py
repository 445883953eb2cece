"""The benchmark scripts' argument handling (their timings are figures to read, never asserted)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def run(script, *args):
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, needle", [
    (["--steps", "150", "--chunk", "100"], "--steps must be a positive multiple of --chunk"),
    (["--reference-python", "/no/such/python"], "no such interpreter"),
])
def test_bench_bad_flags_one_line_exit_2(args, needle, tmp_path):
    r = run("bench.py", *args, "--out", str(tmp_path / "b.json"))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()


@pytest.mark.skipif(HAS_TORCH, reason="checks the message given when PyTorch is missing")
def test_reference_without_torch_is_one_clear_line(tmp_path):
    r = run("bench_reference.py", "--models", "paper-exp1")
    assert r.returncode == 1 and r.stderr.strip() == (
        "bench_reference.py: error: needs PyTorch (pip install torch); prefixlab itself does not use it")
    # bench.py passes the reference script's last line on and stops before timing anything of its own
    r = run("bench.py", "--reference-python", sys.executable, "--skip", "eval,runs", "--out", str(tmp_path / "b.json"))
    assert r.returncode == 1 and r.stderr.strip().endswith("needs PyTorch (pip install torch); prefixlab itself does "
                                                          "not use it")
    assert "pretrain paper-exp1" not in r.stdout and not (tmp_path / "b.json").exists()


def test_reference_unknown_model_exit_2():
    r = run("bench_reference.py", "--models", "paper-exp9")
    assert r.returncode == 2 and "unknown model 'paper-exp9'" in r.stderr
