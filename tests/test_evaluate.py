import jax
import jax.numpy as jnp
import numpy as np

from prefixlab import tasks as T
from prefixlab.evaluate import greedy_generate, make_evaluator, score, sample_test_split
from prefixlab.model import Context
from tests.helpers import tiny_model


def naive_greedy(model, inputs, n_new, ctx=None):
    seq = inputs
    for _ in range(n_new):
        nxt = jnp.argmax(model(seq, ctx)[:, -1], axis=-1)
        seq = jnp.concatenate([seq, nxt[:, None].astype(seq.dtype)], axis=1)
    return seq[:, inputs.shape[1]:]


def test_cached_greedy_equals_recomputing_greedy():
    m = tiny_model(3)
    x = jax.random.randint(jax.random.key(0), (8, 10), 0, 10)
    ctx = Context(jnp.array([True, True, False]), embeds_PD=jax.random.normal(jax.random.key(2), (3, 16)))
    for c in (None, ctx):
        np.testing.assert_array_equal(greedy_generate(m, x, 9, c), naive_greedy(m, x, 9, c))


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
