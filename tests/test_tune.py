import chex
import jax
import jax.numpy as jnp
import numpy as np

from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.methods import Full, HardPrompt, LoRA, Prefix, PrefixKV, SoftPrompt
from prefixlab.train import init_params, run_keys
from prefixlab.tune import RunSpec, TuneSpec, group_runs, tune_group

CFG = preset("tiny", dropout=0.0)
TASK = T.parse_mixture("add1")
NORMAL_PREFIX = Prefix(init_mode="normal")


def bases(seeds=(0, 1)):
    return init_params(CFG, run_keys(list(seeds)))[1]


def spec(method, steps=20, **fields):
    return TuneSpec(method, CFG, TASK, steps, batch_size=8, chunk=10, eval_samples=40, **fields)


def tune(method, runs, base_E, seeds=(0, 1), steps=20):
    return tune_group(spec(method, steps), base_E, runs, list(seeds), progress=False)


def test_frozen_base_stays_bit_identical():
    base_E = bases()
    before = jax.tree.map(np.array, base_E)
    for m in (NORMAL_PREFIX, SoftPrompt(), PrefixKV(), LoRA(rank=1)):
        tune(m, group_runs(m, [1, 2], [1e-2]), base_E)
    chex.assert_trees_all_equal(jax.tree.map(np.array, base_E), before)


def test_run_result_does_not_depend_on_its_group():
    """A length-1 run alone equals the same run padded to length 3 inside a group (same key, masked slots)."""
    base_E = bases()
    alone, tr_a, l_a = tune(NORMAL_PREFIX, [RunSpec(1, 1e-2)], base_E)
    grouped, tr_g, l_g = tune(NORMAL_PREFIX, [RunSpec(3, 1e-2), RunSpec(1, 1e-2)], base_E)
    np.testing.assert_allclose(l_a[:, 0], l_g[:, 1], rtol=1e-5)
    assert [r["exact_match"] for r in alone] == [r["exact_match"] for r in grouped if r["context_len"] == 1]
    assert [r["trainable_params"] for r in grouped] == [2 * 3 * 16, 2 * 1 * 16] * 2


def test_training_lowers_the_loss_for_weight_methods():
    base_E = bases((0,))
    for m in (Full(), LoRA(rank=2, targets=("q", "k", "v", "o", "fc", "proj"))):
        _, _, losses = tune(m, group_runs(m, [None], [1e-2]), base_E, seeds=(0,), steps=60)
        assert losses[0, 0, -10:].mean() < losses[0, 0, :10].mean()


def test_learning_rates_share_one_program_and_differ():
    base_E = bases((0,))
    recs, _, losses = tune(SoftPrompt(), group_runs(SoftPrompt(), [2], [1e-3, 1e-1]), base_E, seeds=(0,))
    assert [r["lr"] for r in recs] == [1e-3, 1e-1]
    assert not np.allclose(losses[0, 0], losses[0, 1])


def test_hard_prompt_search_returns_valid_tokens_and_scores():
    base_E = bases((0,))
    recs, tr, losses = tune(HardPrompt(), group_runs(HardPrompt(), [1, 2], [0.0]), base_E, seeds=(0,))
    ids = np.asarray(tr["ids_P"])
    assert ids.shape == (1, 2, 2) and ids.min() >= 0 and ids.max() < CFG.vocab_size
    assert all(0.0 <= r["exact_match"] <= 1.0 for r in recs)
    assert np.isfinite(losses).all()


def test_a_diverged_run_is_marked_and_its_neighbours_are_not():
    base_E = bases((0,))
    recs, _, _ = tune(NORMAL_PREFIX, group_runs(NORMAL_PREFIX, [1], [1e-2, float("inf")]), base_E, seeds=(0,))
    assert [r["status"] for r in recs] == ["ok", "diverged"]
    assert recs[1]["exact_match"] is None and recs[0]["exact_match"] is not None


def test_cross_tasks_score_each_run_on_other_tasks():
    base_E = bases((0,))
    other = T.parse_mixture("sort_asc")
    recs, _, _ = tune_group(spec(NORMAL_PREFIX, 10, cross_tasks=(other,)), base_E, [RunSpec(1, 1e-2)], [0],
                            progress=False)
    assert set(recs[0]["cross_exact_match"]) == {"sort_asc"}
    assert 0 <= recs[0]["cross_exact_match"]["sort_asc"] <= 1


def test_stopping_records_steps_used_reason_and_validation_scores():
    from prefixlab.stopping import StopRule
    base_E = bases((0,))
    recs, _, losses = tune_group(spec(SoftPrompt(), 60, stop_rule=StopRule(patience=1, tol=10.0), val_samples=64),
                                 base_E, group_runs(SoftPrompt(), [1], [1e-3, 1e-1]), [0], progress=False)
    # no gain of 10 nats is possible: every run stops at its 2nd validation, and the program ends there
    assert [r["steps_used"] for r in recs] == [20, 20] and {r["stop_reason"] for r in recs} == {"plateau"}
    assert losses.shape == (1, 2, 20) and all(len(r["loss_curve"]) == 20 for r in recs)
    assert all(0.0 <= r["val_exact_match"] <= 1.0 and r["val_loss"] > 0 for r in recs)
    fixed, _, _ = tune(SoftPrompt(), group_runs(SoftPrompt(), [1], [1e-3]), base_E, seeds=(0,))
    assert fixed[0]["steps_used"] == 20 and fixed[0]["stop_reason"] == "budget"
