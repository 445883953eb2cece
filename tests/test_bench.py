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
    (["--skip", "pretrain,warmup"], "--skip: unknown part(s) ['warmup']"),
    (["--ks", "1,x"], "--ks must be a comma list of positive integers"),
    (["--eval-samples", "0"], "--eval-samples must be >= 1"),
    (["--out", "{tmp}/file/b.json"], "file is a file"),
])
def test_bench_bad_flags_one_line_exit_2_before_measuring(args, needle, tmp_path, capsys):
    from tests.helpers import load_script

    (tmp_path / "file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as e:
        load_script(SCRIPTS / "bench.py").main([*args] if "--out" in args else [*args, "--out", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1
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
