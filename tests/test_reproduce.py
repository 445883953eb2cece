"""scripts/reproduce.py and prefixlab.experiments.run_reproduction, called in process."""

import json
import multiprocessing
import os
import subprocess
import threading
import time
from pathlib import Path

import jax
import pytest

from prefixlab.experiments import PROFILES, Claim, Report, SectionTiming
from tests.helpers import load_script

REPRODUCE = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"


def forbid_child_processes(monkeypatch):
    """Any way of starting a process raises: the reproduction must run in this one (a TPU chip takes one)."""
    def boom(*args, **kwargs):
        raise AssertionError("the reproduction started a child process")

    monkeypatch.setattr(subprocess.Popen, "__init__", boom)
    monkeypatch.setattr(multiprocessing.Process, "start", boom)
    for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, boom)


def test_unknown_section_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        load_script(REPRODUCE).main(["--sections", "exp1,exp9", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unknown section" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_claims_table_keeps_five_cells_when_a_number_has_bars(tmp_path):
    rep = Report(tmp_path, "tiny")
    rep.add([Claim("content attention", "max |Δ| = 1.7e-06", "identical", True, "64 inputs")])
    rep.write(60.0)
    row = next(l for l in (tmp_path / "report.md").read_text().splitlines() if l.startswith("| content"))
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 5 and cells[-2].strip() == "reproduced" and cells[-1].strip() == "64 inputs"


def test_section_times_add_up_over_resumed_runs(tmp_path):
    for _ in range(2):
        timing = SectionTiming(tmp_path / "timing.json")
        with timing.measure("exp1"):
            pass
    first = SectionTiming(tmp_path / "timing.json").seconds["exp1"]
    timing = SectionTiming(tmp_path / "timing.json")
    try:
        with timing.measure("exp1"):
            raise KeyboardInterrupt  # an interrupted section still adds its time
    except KeyboardInterrupt:
        pass
    assert SectionTiming(tmp_path / "timing.json").seconds["exp1"] > first > 0


def test_tiny_theory_section_runs_in_process_restores_float32_and_is_kept_on_rerun(tmp_path, monkeypatch):
    forbid_child_processes(monkeypatch)
    out = tmp_path / "out"
    x64 = jax.config.read("jax_enable_x64")
    args = ["--profile", "tiny", "--sections", "theory", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert load_script(REPRODUCE).main(args) == 0
    assert jax.config.read("jax_enable_x64") == x64  # float64 only while the checks ran
    data = json.loads((out / "theory-identities.json").read_text())  # scripts/theory.py's format
    assert set(data) == {"command", "wall_s", "rows"} and len(data["rows"]) == 8
    report = (out / "report.md").read_text()
    assert "| theory: identities, constructions (Thm 1, 2), capacity, Wang's limitation | 8 of 8 checks hold |" in report
    assert "## Theory verification" in report
    before = (out / "theory-identities.json").stat().st_mtime_ns
    assert load_script(REPRODUCE).main(args) == 0  # the rerun keeps the table instead of measuring again
    assert (out / "theory-identities.json").stat().st_mtime_ns == before


def test_report_keeps_the_section_order_whichever_lane_finishes_first(tmp_path):
    rep = Report(tmp_path, "tiny", order=["exp1", "exp2"], lanes=2)

    def section(name, delay):
        time.sleep(delay)
        with rep.collecting(name):
            rep.add([Claim(f"{name} claim", "1", "1", True, "p")])
            rep.section(f"{name} title", 1.0, "body")

    threads = [threading.Thread(target=section, args=("exp1", 0.2)), threading.Thread(target=section, args=("exp2", 0))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    rep.write(60.0)
    text = (tmp_path / "report.md").read_text()
    assert text.index("exp1 claim") < text.index("exp2 claim") and text.index("exp1 title") < text.index("exp2 title")
    assert "2 sections at a time" in text
    assert "--profile tiny --sections exp1,exp2 --out" in text  # not the profile's own sections: named


def test_report_header_names_the_command_that_ran(tmp_path):
    one = Report(tmp_path / "a", "decide", order=["budget"], lanes=2)
    one.write(60.0)
    text = (tmp_path / "a" / "report.md").read_text()
    assert "--profile decide --sections budget --out" in text and "at a time" not in text  # one section, one lane
    whole = Report(tmp_path / "b", "decide", order=list(PROFILES["decide"]["sections"]), lanes=2)
    whole.write(60.0)
    text = (tmp_path / "b" / "report.md").read_text()
    assert "--profile decide --out" in text and "2 sections at a time" in text


def test_timing_keeps_each_threads_section_and_the_whole_wall_time(tmp_path):
    timing = SectionTiming(tmp_path / "timing.json")

    def measure(name, delay):
        with timing.measure(name):
            time.sleep(delay)
            seen[name] = timing.so_far()

    seen = {}
    threads = [threading.Thread(target=measure, args=("a", 0.3)), threading.Thread(target=measure, args=("b", 0.1))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    data = json.loads((tmp_path / "timing.json").read_text())
    assert 0.3 <= data["sections"]["a"] < 0.3 + 0.25 and 0.1 <= data["sections"]["b"] < 0.1 + 0.25
    assert seen["b"] < seen["a"] and data["wall_s"] < data["sections"]["a"] + data["sections"]["b"]
    assert SectionTiming(tmp_path / "timing.json").seconds == data["sections"]  # read back as it was written
    (tmp_path / "old.json").write_text(json.dumps({"exp1": 5.0}))  # the flat format of earlier runs
    assert SectionTiming(tmp_path / "old.json").seconds == {"exp1": 5.0}
