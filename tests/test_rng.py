import jax
import numpy as np

from prefixlab.rng import hash_bits, keep_mask, uniform_ints


def test_uniform_ints_range_and_balance():
    x = np.asarray(uniform_ints(jax.random.key(0), (100_000,), 1, 10))
    assert x.min() == 1 and x.max() == 10
    counts = np.bincount(x)[1:]
    assert np.all(np.abs(counts / len(x) - 0.1) < 0.005)


def test_keep_mask_rate_and_scale():
    keep, scale = keep_mask(jax.random.key(1), (200_000,), 0.1)
    assert abs(float(np.asarray(keep).mean()) - 0.9) < 0.005
    assert abs(scale - 1 / 0.9) < 1e-4


def test_hash_bits_are_balanced_and_keys_independent():
    bits = np.asarray(hash_bits(jax.random.key(2), (100_000,)))
    per_bit = np.array([(bits >> b) & 1 for b in range(32)]).mean(axis=1)
    assert np.all(np.abs(per_bit - 0.5) < 0.01)
    # neighbouring keys (as fold_in gives every step and layer) agree on a 0.9-keep mask as independent masks do
    key = jax.random.key(3)
    a, b = (np.asarray(keep_mask(jax.random.fold_in(key, i), (200_000,), 0.1)[0]) for i in (0, 1))
    assert abs((a == b).mean() - (0.9**2 + 0.1**2)) < 0.005
    # the same key gives the same mask; shape does not change the values of the leading elements
    np.testing.assert_array_equal(hash_bits(key, (2, 5)).reshape(-1), hash_bits(key, (10,)))
