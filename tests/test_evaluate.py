import jax
import jax.numpy as jnp
import numpy as np

from prefixlab import tasks as T
from prefixlab.evaluate import make_evaluator, score, sample_test_split
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
