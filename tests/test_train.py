import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.train import OptimConfig, final_loss, model_flops_per_step, pretrain

CFG = preset("tiny")
MIX = T.parse_mixture("add1")


def test_same_seed_same_result_and_chunking_does_not_matter():
    g, a, la, _ = pretrain(CFG, MIX, [0, 1], 40, batch_size=16, chunk=20, progress=False)
    _, b, lb, _ = pretrain(CFG, MIX, [0, 1], 40, batch_size=16, chunk=40, progress=False)
    chex.assert_trees_all_close(a, b, atol=1e-6)
    np.testing.assert_allclose(la, lb, atol=1e-6)
    assert la.shape == (2, 40)
    assert not np.allclose(la[0], la[1])  # seeds differ


def test_vmapped_runs_equal_single_runs():
    _, both, l2, _ = pretrain(CFG, MIX, [3, 4], 30, batch_size=16, progress=False)
    _, one, l1, _ = pretrain(CFG, MIX, [4], 30, batch_size=16, progress=False)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[1], both), jax.tree.map(lambda x: x[0], one), atol=1e-5)
    np.testing.assert_allclose(l2[1], l1[0], rtol=1e-5)


def test_loss_decreases():
    _, _, losses, _ = pretrain(CFG, MIX, [0], 300, batch_size=32, optim=OptimConfig(lr=3e-3), progress=False)
    assert final_loss(losses, 20)[0] < 0.6 * losses[0, :20].mean()


def test_vocabulary_mismatch_is_refused():
    with pytest.raises(ValueError, match="vocabulary"):
        pretrain(CFG, T.parse_mixture("modulo"), [0], 10, progress=False)


def test_flop_count_matches_parameters():
    # 6 N tokens dominates for the 4-layer model: within 10 % of 6 x 3.16M x 64 x 19
    f = model_flops_per_step(preset("paper-exp3"), 64, 19)
    assert 0.9 < f / (6 * 3.16e6 * 64 * 19) < 1.1
    # scoring 10 of 19 positions skips about half of the last block's non-qkv work: 4-layer ~9 % less
    assert 0.85 < model_flops_per_step(preset("paper-exp3"), 64, 19, scored=10) / f < 0.95


@pytest.mark.parametrize("lora", [None, ("q", "k", "fc")])
def test_loss_on_target_positions_only_equals_full_logits(lora):
    """lm_loss computes logits only from FIRST_TARGET on; loss and gradients (LoRA factors included) equal those
    of the full logits."""
    import optax
    from flax import nnx
    from prefixlab.train import init_params, lm_loss, run_keys
    graphdef, params_R = init_params(CFG, run_keys([0]))
    if lora is not None:  # the whole adapted model trains here; B = 0 at init would hide the LoRA path
        from prefixlab.methods import LoRA
        adapted = LoRA(rank=2, targets=lora).adapt(nnx.merge(graphdef, jax.tree.map(lambda x: x[0], params_R)),
                                                   jax.random.key(0))
        graphdef, params = nnx.split(adapted)
        params_R = jax.tree.map(lambda x: x[None], params)
        params_R = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), params_R)
    params = jax.tree.map(lambda x: x[0], params_R)
    batch = MIX.batch(jax.random.key(3), 16)

    def full(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(batch.tokens_BT), batch.targets_BT)
        return (ce * batch.mask_BT).sum() / batch.mask_BT.sum()

    (l_full, g_full), (l_fast, g_fast) = (jax.value_and_grad(f)(params) for f in
                                         (full, lambda p: lm_loss(nnx.merge(graphdef, p), batch)))
    assert abs(float(l_full) - float(l_fast)) < 1e-6
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_fast)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_runs_in_sequence_equal_runs_side_by_side():
    """run_batch only changes how runs are scheduled inside the program, not their results."""
    from prefixlab.train import init_params, lm_loss, make_optimizer, run_keys, run_training
    from flax import nnx

    graphdef, params_R = init_params(CFG, run_keys([0, 1, 2]))

    def loss_fn(params, _f, _rd, key):
        return lm_loss(nnx.merge(graphdef, params), MIX.batch(key, 8), None, None)

    out = [run_training(loss_fn, params_R, None, None, jnp.full((3,), 1e-3), make_optimizer(OptimConfig()),
                        run_keys([5, 6, 7]), 10, 5, progress=False, run_batch=rb)[:2] for rb in (0, 1, 2)]
    for other in out[1:]:
        chex.assert_trees_all_close(out[0][0], other[0], atol=1e-5)
        np.testing.assert_allclose(out[0][1], other[1], rtol=1e-5)


def test_pretraining_with_stopping_ends_each_seeds_curve_at_its_stop():
    from prefixlab.bases import pretrain_config
    from prefixlab.stopping import STOP_REASONS, EarlyStopping, StopRule

    calls = []

    def validate(params_R, frozen, run_data):  # seed 0 solves the split at the 2nd validation (step 20)
        calls.append(1)
        return np.array([1.0, 1.0 - 0.1 * len(calls)]), np.array([float(len(calls) >= 2), 0.0])

    stopping = EarlyStopping(StopRule(patience=2), validate)
    _, params, losses, _ = pretrain(CFG, MIX, [0, 1], 40, batch_size=16, chunk=10, progress=False, stopping=stopping)
    assert losses.shape == (2, 40) and stopping.stop_step.tolist() == [20, 40]
    assert [STOP_REASONS[c] for c in stopping.reason] == ["solved", "budget"]
    assert np.isfinite(losses[0, :20]).all() and np.isnan(losses[0, 20:]).all() and np.isfinite(losses[1]).all()
    # the cache keys a base by its stopping rule, and fixed-step entries keep the keys they had
    fixed = pretrain_config(CFG, MIX, 40, 16, OptimConfig())
    stopped = pretrain_config(CFG, MIX, 40, 16, OptimConfig(), StopRule(patience=2), 512)
    assert "stopping" not in fixed and stopped["stopping"] == {"patience": 2, "tol": 1e-3, "val_samples": 512}
    assert set(fixed["optim"]) == {"lr", "b1", "b2", "weight_decay", "clip"}  # the keys made before the options
    from prefixlab.stopping import TRANSITION_SAFE

    safe = pretrain_config(CFG, MIX, 40, 16, OptimConfig(), TRANSITION_SAFE, 512)["stopping"]
    assert safe == {"patience": 4, "tol": 1e-3, "min_fraction": 0.6, "patience_growth": 0.25, "trend": True,
                    "val_samples": 512}


def test_reference_tuning_optimizer_clips_each_tensor_and_decays_every_tensor():
    """One step of REFERENCE_TUNING against AdamW written out (torch's per-tensor clip_grad_norm_, decay 0.01 on
    every tensor): the first Adam step moves each element by -lr * (sign of its clipped gradient + decay * p)."""
    from prefixlab.train import REFERENCE_TUNING, make_optimizer

    params = {"prefix": jnp.full((2, 2), 0.5), "lora_B": jnp.full((3,), -2.0)}
    grads = {"prefix": jnp.full((2, 2), 1.5), "lora_B": jnp.array([0.0, 0.3, -0.4])}  # norms 3.0 and 0.5
    opt = make_optimizer(REFERENCE_TUNING)
    updates, _ = opt.update(grads, opt.init(params), params)
    clipped = {"prefix": grads["prefix"] / (3.0 + 1e-6), "lora_B": grads["lora_B"]}  # only the first is over 1
    for k in params:
        g = clipped[k]
        adam = g / (jnp.abs(g) + 1e-8)  # m_hat / (sqrt(v_hat) + eps) after one step
        np.testing.assert_allclose(updates[k], -(adam + 0.01 * params[k]), rtol=1e-5, atol=1e-6)
    # the default clips by the global norm (3.04) and decays only Linear kernels (neither leaf here)
    default = make_optimizer(OptimConfig(weight_decay=0.01))
    glob, _ = default.update(grads, default.init(params), params)
    np.testing.assert_allclose(glob["lora_B"], -grads["lora_B"] / (jnp.abs(grads["lora_B"]) + 1e-8 * 3.04), rtol=1e-4)
