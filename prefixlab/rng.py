"""Cheap random draws: 16 bits per value, two values per 32-bit word.

On CPU, threefry word generation dominates data generation and dropout; `jax.random.randint` and
`jax.random.bernoulli` spend a full word per value, these spend half.
"""

import math

import jax
import jax.numpy as jnp


def halfwords(key, shape) -> jax.Array:
    """uint32 values uniform in [0, 65536)."""
    size = math.prod(shape)
    words = jax.random.bits(key, ((size + 1) // 2,), jnp.uint32)
    return jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(-1)[:size].reshape(shape)


def uniform_ints(key, shape, lo: int, hi: int) -> jax.Array:
    """int32 in [lo, hi] by multiply-shift: exactly uniform when hi - lo + 1 is a power of two, otherwise
    biased by less than (hi - lo + 1) / 65536 relative."""
    return ((halfwords(key, shape) * jnp.uint32(hi - lo + 1)) >> 16).astype(jnp.int32) + lo


def keep_mask(key, shape, rate: float):
    """Dropout keep mask and the matching inverse scale; the drop probability is rate rounded to 2^-16."""
    threshold = round(rate * 65536)
    return halfwords(key, shape) >= threshold, 65536 / (65536 - threshold)
