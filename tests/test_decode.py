import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.decode import greedy_generate
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
