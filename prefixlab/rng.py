"""Cheap random draws.

On CPU, threefry word generation dominated data generation and dropout (`jax.random.randint` and
`jax.random.bernoulli` spend a full threefry word per value). Task digits and dropout masks come from a counter
hash instead (`hash_bits`), keyed by a threefry key, so keys are still split and folded the usual way.
"""

import math

import jax
import jax.numpy as jnp


def halfwords(key, shape) -> jax.Array:
    """uint32 values uniform in [0, 65536), two per hashed word (half the hashing of one word each)."""
    size = math.prod(shape)
    words = hash_bits(key, ((size + 1) // 2,))
    return jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(-1)[:size].reshape(shape)


def uniform_ints(key, shape, lo: int, hi: int) -> jax.Array:
    """int32 in [lo, hi] by multiply-shift: exactly uniform when hi - lo + 1 is a power of two, otherwise
    biased by less than (hi - lo + 1) / 65536 relative."""
    return ((halfwords(key, shape) * jnp.uint32(hi - lo + 1)) >> 16).astype(jnp.int32) + lo


_GOLDEN = 0x9E3779B9


def _lowbias32(x):
    """A 32-bit integer bijection with low bias (C. Wellons' hash prospector, 'lowbias32')."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hash_bits(key, shape) -> jax.Array:
    """uint32 values, one per element: two lowbias32 rounds over (element index, the key's two words).
    A counter-based hash, not a cryptographic generator: fine for dropout masks and much cheaper than threefry
    on CPU (docs/performance.md)."""
    k = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    x = jax.lax.iota(jnp.uint32, math.prod(shape)) * jnp.uint32(_GOLDEN) + k[0]
    return _lowbias32(_lowbias32(x) ^ k[1]).reshape(shape)


def keep_mask(key, shape, rate: float):
    """Dropout keep mask and the matching inverse scale; the drop probability is rate rounded to 2^-32."""
    threshold = min(round(rate * 2**32), 2**32 - 1)
    return hash_bits(key, shape) >= jnp.uint32(threshold), 2**32 / (2**32 - threshold)
