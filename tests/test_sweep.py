import json
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP = Path(__file__).resolve().parent.parent / "scripts" / "sweep.py"


def sweep(*args, cwd=None):
    return subprocess.run([sys.executable, str(SWEEP), *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "sort_up"], "unknown task 'sort_up'"),
    (["--pretrain", "sort_asc,,add1"], "malformed task list"),
    (["--methods", "prefix,adapter"], "unknown method"),
    (["--tune-steps", "0"], "--tune-steps must be >= 1"),
    (["--prefix-lengths", "1,x"], "comma list of integers"),
    (["--lora-targets", "q,z"], "unknown LoRA target"),
    (["--tune-lr", "prompt=1e-3"], "has no learning rate"),
    (["--model", "huge"], "invalid choice"),
])
def test_bad_flags_one_line_exit_2(args, needle, tmp_path):
    r = sweep(*args, "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_existing_results_are_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text('{"keep": 1}\n')
    r = sweep("--out", str(out))
    assert r.returncode == 2 and "already holds results" in r.stderr
    assert (out / "results.jsonl").read_text() == '{"keep": 1}\n'


def test_tiny_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = sweep("--model", "tiny", "--pretrain", "add1", "--tasks", "add1,sort_asc+add1", "--methods",
              "none,prefix,lora", "--pretrain-steps", "30", "--tune-steps", "10", "--seeds", "2",
              "--eval-samples", "40", "--prefix-lengths", "1,2", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # per task: none (2 seeds) + prefix (2 lengths x 2 seeds) + lora (2 seeds)
    assert len(rows) == 2 * (2 + 4 + 2)
    required = {"pretrain", "task", "method", "seed", "steps", "trainable_params", "final_loss", "exact_match",
                "token_accuracy", "wall_s", "context_len", "lora_rank", "lr"}
    assert all(required <= set(row) for row in rows)
    assert {r["method"] for r in rows} == {"none", "prefix", "lora"}
    assert all(0 <= r["exact_match"] <= 1 for r in rows)
    assert json.loads((out / "config.json").read_text())["model"] == "tiny"
    assert (out / "results.csv").read_text().count("\n") == len(rows) + 1
    assert "exact match" in r.stdout
