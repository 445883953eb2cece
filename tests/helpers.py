"""Small shared builders for the tests."""

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import preset
from prefixlab.model import Transformer


def tiny_model(seed=0, **overrides):
    cfg = preset("tiny", dropout=0.0, **overrides)
    return Transformer(cfg, rngs=nnx.Rngs(params=jax.random.key(seed)))


def tokens(seed=0, B=3, T=19, V=10):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)
