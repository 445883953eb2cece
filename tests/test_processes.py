"""Several JAX processes as one sweep (prefixlab/processes.py): two local processes with a coordinator on 127.0.0.1
and gloo collectives give the single-process sweep's results; only process 0 writes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prefixlab.processes import agree, put, to_host

SWEEP = Path(__file__).resolve().parent.parent / "scripts" / "sweep.py"
# REFERENCE_SWEEP (conftest.py) as flags
FLAGS = ["--model", "tiny", "--pretrain", "add1", "--tasks", "add1", "--methods", "none,prefix,lora",
         "--prefix-lengths", "1,2", "--pretrain-steps", "40", "--tune-steps", "20", "--seeds", "2",
         "--eval-samples", "40", "--lr-grid", "1", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_helpers_are_plain():
    import jax
    import numpy as np

    assert agree([True, False]) == [True, False]
    x = np.arange(6.0)
    np.testing.assert_array_equal(to_host(put(x, jax.sharding.SingleDeviceSharding(jax.devices()[0]))), x)


@pytest.mark.slow  # docs/performance.md: the slow run
def test_two_processes_give_the_single_process_results(tmp_path, reference_sweep):
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "JAX_NUM_PROCESSES": "2"}
    cmd = [sys.executable, str(SWEEP), *FLAGS, "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache2"),
           "--distributed"]
    procs = [subprocess.Popen(cmd, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (1, 0)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[1][-3000:]
    assert "2 cpu device(s)" in outs[1]  # process 0 sees one mesh over both processes' devices
    assert "exact match" not in outs[0]  # process 1 prints and writes nothing

    config, one, _ = reference_sweep
    assert dict(zip(FLAGS[::2], FLAGS[1::2]))["--methods"] == ",".join(config.methods)
    two = [json.loads(line) for line in (tmp_path / "two" / "results.jsonl").read_text().splitlines()]
    assert len(two) == len(one) == 2 * (1 + 2 + 1)
    for a, b in zip(one, two):
        assert (a["group"], a["seed"], a["context_len"]) == (b["group"], b["seed"], b["context_len"])
        assert (a["exact_match"], a["token_accuracy"]) == (b["exact_match"], b["token_accuracy"])
        assert abs(a["final_loss"] - b["final_loss"]) < 1e-5
        if a["loss_curve"]:
            assert max(abs(x - y) for x, y in zip(a["loss_curve"], b["loss_curve"])) < 1e-5
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["groups"].keys() == {
        r["group"] for r in one}


def test_distributed_without_a_coordinator_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS",
                                                                      "SLURM_", "OMPI_"))}
    r = subprocess.run([sys.executable, str(SWEEP), *FLAGS, "--out", str(tmp_path / "run"), "--distributed"], env=env,
                       capture_output=True, text=True, timeout=300)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("sweep.py: error: --distributed:"), r.stderr
    assert "coordinator" in err[0] and not (tmp_path / "run").exists()
