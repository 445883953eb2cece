"""The reproduction's up-front ETA (prefixlab/experiments/eta.py): what it charges, not how fast the machine is."""

import dataclasses

from prefixlab.experiments.eta import Estimate, describe, estimate, section_configs
from prefixlab.sweep import SweepConfig


def test_each_base_is_charged_once_and_every_run_its_whole_budget(tmp_path):
    config = SweepConfig(model="tiny", pretrain="add1", tasks=("add1", "sort_asc"), methods=("none", "prefix", "lora"),
                         prefix_lengths=(1, 2), lr_grid=(1.0, 10.0), seeds=3, pretrain_steps=100, tune_steps=50,
                         cache_dir=str(tmp_path / "cache"))
    rates = {"tiny": 1e9}  # FLOP/s, given: nothing is measured
    e = estimate([config], rates)
    # 2 tasks x (prefix: 2 lengths x 2 rates + lora: 2 rates) x 3 seeds runs, 50 steps each; 3 bases of 100 steps
    assert (e.pretrain_steps, e.tune_steps, e.groups) == (300, 2 * (4 + 2) * 3 * 50, 6)
    shared = dataclasses.replace(config, shared_base=True, methods=("none",))
    seen = set()
    first, again = estimate([shared], rates, seen), estimate([shared], rates, seen)
    assert (first.pretrain_steps, again.pretrain_steps) == (100, 0)  # one base, charged once per reproduction
    assert e.seconds > first.seconds > 0
    assert describe("exp4", Estimate(0, 10, 1, 3725)).startswith("[exp4] ETA ≤ 1 h 02 min")


def test_every_section_with_sweeps_is_costed():
    assert [len(section_configs(s, "tiny")) > 0 for s in ("exp1", "exp4", "budget", "theory")] == [True, True, True,
                                                                                                       False]
