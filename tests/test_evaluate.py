import jax
import jax.numpy as jnp
import numpy as np

from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.decode import greedy_generate
from prefixlab.evaluate import VAL_KEY_SEED, make_evaluator, score, sample_test_split
from tests.helpers import tiny_model


def test_score():
    t = jnp.array([[1, 2], [3, 4], [5, 6]])
    p = jnp.array([[1, 2], [3, 0], [0, 0]])
    em, ta = score(p, t, jnp.array([True, True, False]))
    assert float(em) == 0.5 and float(ta) == 0.75


def test_test_set_is_fixed_and_from_the_test_split():
    mix = T.parse_mixture("sort_asc")
    a, ta, va = sample_test_split(mix, 100)
    b, _, _ = sample_test_split(mix, 100)
    np.testing.assert_array_equal(a, b)
    assert bool(T.is_test_input(a).all()) and bool(va.all())
    np.testing.assert_array_equal(ta, jnp.sort(a, axis=1))


def test_evaluator_runs_axis_and_random_model_scores_low():
    """One run in, one score out; an untrained model gets (almost) nothing right."""
    from flax import nnx

    m = tiny_model(0)
    g, state = nnx.split(m)
    mix = T.parse_mixture("add1")
    ev = make_evaluator(lambda tr, fr, rd: (nnx.merge(g, tr), None), mix, n=50, batch=20)
    em, ta = ev(jax.tree.map(lambda x: x[None], state), None, None)
    assert em.shape == (1,) and float(em[0]) < 0.1


def test_teacher_forced_exact_match_equals_greedy_decoding():
    """The validator scores by one forward pass; its exact match must be what greedy decoding gets."""
    from flax import nnx
    from prefixlab.evaluate import base_builder, make_validator
    from prefixlab.train import OptimConfig, pretrain

    mix = T.parse_mixture("add1")
    graphdef, params_R, _, _ = pretrain(preset("tiny"), mix, [0], 150, batch_size=32, optim=OptimConfig(lr=3e-3),
                                        progress=False)
    build = base_builder(graphdef)
    loss_R, val_em_R = make_validator(build, mix, 400)(params_R, None, None)
    batch = mix.batch(jax.random.key(VAL_KEY_SEED), 400, split="val")
    val_inputs = batch.tokens_BT[:, :T.SEQ_LEN]
    assert bool(T.in_split(val_inputs, "val").all())
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x[0], params_R))
    greedy = greedy_generate(model, val_inputs, T.SEQ_LEN)
    greedy_em = float(score(greedy, batch.targets_BT[:, T.SEQ_LEN - 1:], batch.mask_BT[:, -1] > 0)[0])
    assert 0.05 < greedy_em < 0.95  # partly trained: some right, some wrong, so the comparison means something
    assert abs(float(val_em_R[0]) - greedy_em) < 1e-6 and np.isfinite(float(loss_R[0]))
