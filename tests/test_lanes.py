"""prefixlab.experiments.lanes: sections side by side in threads, in dependency order, errors handed back."""

import dataclasses
import json
import threading
import time

import pytest

from prefixlab.experiments.lanes import run_lanes, start_order
from prefixlab.sweep import SweepConfig, run_sweep


def recorder(durations, fail=None):
    """run_one that sleeps `durations[name]` s and logs (event, name, time, running count)."""
    events, running, lock = [], set(), threading.Lock()

    def run_one(name):
        with lock:
            running.add(name)
            events.append(("start", name, time.perf_counter(), len(running)))
        time.sleep(durations.get(name, 0.05))
        with lock:
            running.discard(name)
            events.append(("end", name, time.perf_counter(), len(running)))
        if name == fail:
            raise RuntimeError(f"{name} failed")

    return run_one, events


def at(events, kind, name):
    return next(t for k, n, t, _ in events if k == kind and n == name)


def test_waited_on_sections_start_first_and_dependents_wait_for_them():
    sections = ["exp1", "exp2", "exp3", "exp4", "spread", "theory"]
    assert start_order(sections)[0] == "exp3"
    run_one, events = recorder({"exp3": 0.3, "exp1": 0.05})
    run_lanes(sections, run_one, lanes=2)
    assert sorted(n for k, n, _, _ in events if k == "end") == sorted(sections)
    assert max(c for k, _, _, c in events if k == "start") == 2  # two at a time, never more
    for after in ("exp4", "spread"):
        assert at(events, "start", after) >= at(events, "end", "exp3")
    assert at(events, "start", "exp1") < at(events, "end", "exp3")  # the other lane did not wait


def test_one_lane_keeps_the_given_order():
    run_one, events = recorder({})
    run_lanes(["theory", "exp1", "exp3"], run_one, lanes=1)
    assert [n for k, n, _, _ in events if k == "start"] == ["theory", "exp1", "exp3"]


def test_after_an_error_the_running_section_finishes_and_nothing_new_starts():
    run_one, events = recorder({"exp3": 0.1, "exp1": 0.4}, fail="exp3")
    with pytest.raises(RuntimeError, match="exp3 failed"):
        run_lanes(["exp3", "exp1", "exp4", "exp2"], run_one, lanes=2)
    started = [n for k, n, _, _ in events if k == "start"]
    assert started == ["exp3", "exp1"] and ("end", "exp1") in [(k, n) for k, n, _, _ in events]


def test_sweeps_in_two_lanes_give_the_records_of_one_after_another(tmp_path):
    """Two sweeps at once, in threads of one process, compute exactly what they compute alone."""
    common = dict(model="tiny", pretrain_steps=20, tune_steps=10, seeds=1, methods=("prefix",), eval_samples=32,
                  val_samples=32, cross_eval=False, lr_grid=(1.0,), chunk=5)
    configs = {"a": SweepConfig(tasks=("sort_asc",), pretrain="sort_asc", **common),
               "b": SweepConfig(tasks=("add1",), pretrain="add1", **common)}

    def run_all(root, lanes):
        run_lanes(list(configs), lambda n: run_sweep(
            dataclasses.replace(configs[n], cache_dir=str(root / "cache")), root / n, progress=False,
            log=lambda *a, **k: None), lanes)
        rows = {}
        for n in configs:
            rows[n] = [{k: v for k, v in json.loads(line).items() if "wall" not in k}
                       for line in (root / n / "results.jsonl").read_text().splitlines()]
        return rows

    alone, side_by_side = run_all(tmp_path / "one", 1), run_all(tmp_path / "two", 2)
    assert alone == side_by_side and all(alone.values())
