import jax
import numpy as np

from prefixlab.rng import keep_mask, uniform_ints


def test_uniform_ints_range_and_balance():
    x = np.asarray(uniform_ints(jax.random.key(0), (100_000,), 1, 10))
    assert x.min() == 1 and x.max() == 10
    counts = np.bincount(x)[1:]
    assert np.all(np.abs(counts / len(x) - 0.1) < 0.005)


def test_keep_mask_rate_and_scale():
    keep, scale = keep_mask(jax.random.key(1), (200_000,), 0.1)
    assert abs(float(np.asarray(keep).mean()) - 0.9) < 0.005
    assert abs(scale - 1 / 0.9) < 1e-4
