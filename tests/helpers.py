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


def load_script(path):
    """A scripts/*.py file as a module, to call its functions (parse_args, Report, ...) in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
