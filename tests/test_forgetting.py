import json

import pytest

from prefixlab.forgetting import forgetting
from prefixlab.results import read_jsonl
from prefixlab.selection import selected


@pytest.fixture(scope="module")
def sweep_dir(reference_sweep):
    """The suite's shared tiny sweep (tests/conftest.py: base on add1, prefix and LoRA tuned on add1): run once."""
    return reference_sweep[2] / "run"


def test_forgetting_post_hoc_equals_the_sweeps_own_evaluation(sweep_dir):
    """Scored on the pretraining task (add1, as the sweep scored it) and one other task (sort_asc)."""
    rows = forgetting(sweep_dir, tasks=["add1", "sort_asc"], spectrum=True)
    records = {(r["group"], r["seed"], r["context_len"]): r for r in selected(read_jsonl(sweep_dir / "results.jsonl"))}
    assert sorted({r["method"] for r in rows}) == ["lora", "prefix"] and len(rows) == 2 * 2 + 2  # P = 1, 2; LoRA
    for row in rows:
        rec = records[(row["group"], row["seed"], row["context_len"])]
        assert row["other_tasks"] == ["sort_asc"]
        # the same test samples as the sweep's own evaluation: the tuned task's score is the record's
        assert row["with_context"]["add1"] == pytest.approx(rec["exact_match"])
        assert row["forgetting"] == pytest.approx(row["base"]["sort_asc"] - row["with_context"]["sort_asc"])
        cont = row["continuation"]
        assert 0 <= row["retained_continuation"] <= 1 and row["forgetting_continuation"] == pytest.approx(
            cont["base"]["sort_asc"] - cont["with_context"]["sort_asc"])
        if row["method"] == "prefix":  # without its context the model is the base: nothing forgotten, by construction
            assert row["without_context"] == row["base"] and row["intruders"] == 0 and row["delta_rank"] == 0
            assert cont["without_context"] == cont["base"]
        else:
            assert row["without_context"] is None and cont["without_context"] is None
    base = {r["seed"]: r for r in records.values() if r["method"] == "none"}
    assert all(row["base"]["add1"] == pytest.approx(base[row["seed"]]["exact_match"]) for row in rows)
    lora = [r for r in rows if r["method"] == "lora"]
    assert all(r["lora_rank"] == 1 and r["delta_rank"] <= 1 for r in lora)  # rank-1 updates, merged
    json.dumps(rows)  # plain records


def test_forgetting_refuses_an_empty_task_list(sweep_dir):
    with pytest.raises(ValueError, match="no tasks"):
        forgetting(sweep_dir, tasks=[])
