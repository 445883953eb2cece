"""The capacity scan's library (prefixlab/cram.py) on the tiny model: one compiled program shared by every test."""

import jax
import numpy as np
import pytest
from flax import nnx

from prefixlab import cram
from prefixlab.config import preset
from prefixlab.methods import get_method
from prefixlab.model import Transformer

CFG = preset("tiny", block_size=8, dropout=0.0)
SEEDS = [0, 1]


def _spec(steps=200):
    return cram.CramSpec(get_method("prefix_kv"), CFG, "float32", (1, 2), 8, lr=0.1, patience=30, steps=steps,
                         chunk=10)


@pytest.fixture(scope="module")
def scan():
    base = nnx.state(Transformer(CFG, rngs=nnx.Rngs(params=jax.random.key(0))))
    targets = cram.random_targets(0, 2, 8, CFG.vocab_size)
    records, trainable = cram.cram(_spec(), base, targets, SEEDS, progress=False)
    return base, targets, records, trainable


def test_runs_reconstruct_a_prefix_and_the_record_says_how_much(scan):
    _, _, records, _ = scan
    assert len(records) == 2 * 2 * len(SEEDS)  # P x targets x seeds
    assert min(r["n_max"] for r in records) >= 1
    for r in records:
        assert r["trainable_floats"] == get_method("prefix_kv").n_params(CFG, r["context_len"])
        assert r["bits_per_float"] == pytest.approx(r["n_max"] * np.log2(10) / r["trainable_floats"])


def test_n_max_never_falls_during_the_curriculum(scan):
    for r in scan[2]:
        assert len(r["n_curve"]) >= 2 and np.all(np.diff(r["n_curve"]) >= 0) and r["n_curve"][-1] == r["n_max_forced"]


def test_greedy_decoding_of_the_kept_context_reproduces_exactly_n_max_tokens(scan):
    base, targets, records, trainable = scan
    for k, r in enumerate(records):
        tr = jax.tree.map(lambda x: x[k], trainable)
        out = cram.greedy_reconstruction(_spec(), base, tr, r["context_len"])
        target = targets[r["target"]]
        lead = int(np.cumprod(out == target).sum())
        assert lead == r["n_max"], (k, out, target)


def test_a_stalled_run_stops_changing_and_runs_are_deterministic(scan):
    base, targets, records, trainable = scan
    stalled = [k for k, r in enumerate(records) if r["stop_reason"] == "stalled"]
    assert stalled and all(records[k]["steps_used"] < 200 for k in stalled)
    again, trainable2 = cram.cram(_spec(steps=400), base, targets, SEEDS, progress=False)  # more budget, same seeds
    for k in stalled:
        drop = lambda r: {key: v for key, v in r.items() if key not in ("wall_s", "n_curve")}
        assert drop(again[k]) == drop(records[k])
        for a, b in zip(jax.tree.leaves(trainable), jax.tree.leaves(trainable2)):
            np.testing.assert_array_equal(a[k], b[k])


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="context method"):
        cram.CramSpec(get_method("lora"), CFG, "float32", (1,), 8)
    with pytest.raises(ValueError, match="n_cap"):
        cram.CramSpec(get_method("prefix"), CFG, "float32", (1,), 9)
    with pytest.raises(ValueError, match="precision"):
        cram.CramSpec(get_method("prefix"), CFG, "float16", (1,), 8)
