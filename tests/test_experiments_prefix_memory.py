"""The prefix_memory section's sweeps and verdicts (pure functions of records; no training here)."""

import pytest

from prefixlab.experiments import prefix_memory as PM
from prefixlab.experiments.profiles import PROFILES
from prefixlab.sweep import SweepConfig


def rec(task, method, seed, em, context_len=None):
    return dict(task=task, method=method, seed=seed, exact_match=em, context_len=context_len)


def sharp_records(memory_add2, prefix_add2, memory_desc=0.0):
    out = []
    for s in range(3):
        out += [rec("sort_asc", "none", s, 0.95), rec("sort_desc", "lora", s, 0.9),
                rec("add1", "none", s, 0.99), rec("add2", "none", s, 0.0), rec("add2", "lora", s, 0.9)]
        for P in PM.SHARP_LENGTHS:
            out += [rec("sort_desc", m, s, memory_desc if m == "prefix_memory" else 0.0, P) for m in PM.CONTEXT]
            out += [rec("add2", "prefix_memory", s, memory_add2 + 0.01 * s, P),
                    rec("add2", "prefix", s, prefix_add2, P), rec("add2", "prefix_kv", s, prefix_add2, P)]
    return out


@pytest.mark.parametrize("profile", list(PROFILES))
def test_configs_are_valid_sweeps_with_three_seeds(profile):
    cfgs = PM.configs(profile)
    assert set(cfgs) == {"pm-sharp-sort", "pm-sharp-add", "pm-dilution"}
    for c in cfgs.values():
        assert isinstance(c, SweepConfig) and SweepConfig.from_json(c.to_json()) == c
        assert "prefix_memory" in c.methods and (profile == "tiny" or c.seeds >= 3)
    assert cfgs["pm-sharp-sort"].tune_tasks == ("sort_desc",) and cfgs["pm-sharp-add"].pretrain == "add1"


def test_sharp_claims_hold_when_memory_fails_on_sort_desc_and_gains_on_add2():
    got = {c.statement: c for c in PM.claims({"pm-sharp-sort": sharp_records(0.9, 0.3),
                                              "pm-sharp-add": sharp_records(0.9, 0.3)}, "quick")}
    assert all(c.verdict for s, c in got.items() if "sort_desc" in s and "prefix_memory" in s)
    gains = [c for s, c in got.items() if "prefix_memory − prefix" in s]
    assert len(gains) == len(PM.SHARP_LENGTHS) and all(c.verdict for c in gains)
    assert "paired gap +6" in gains[0].measured  # 0.9 + 0.01 s - 0.3 over seeds 0..2


def test_sharp_claims_fail_when_memory_learns_sort_desc_or_gains_nothing():
    got = PM.claims({"pm-sharp-sort": sharp_records(0.3, 0.3, memory_desc=0.5),
                     "pm-sharp-add": sharp_records(0.3, 0.3)}, "quick")
    assert not any(c.verdict for c in got if "prefix_memory P=" in c.statement and "sort_desc" in c.statement)
    assert not any(c.verdict for c in got if "prefix_memory − prefix" in c.statement)
    assert PM.claims({}, "quick") == []
