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


def check_trains_only(method, expected_paths, expected_params):
    """A weight-subset method on the tiny model: it trains exactly `expected_paths` of the base (and they move),
    counts `expected_params`, leaves the frozen base bit-identical, and its loss goes down."""
    import numpy as np
    from flax import nnx

    from prefixlab import tasks as T
    from prefixlab.train import init_params, run_keys
    from prefixlab.tune import group_runs, tune_group

    cfg = preset("tiny", dropout=0.0)
    base_S = init_params(cfg, run_keys([0]))[1]
    before = jax.tree.map(np.array, base_S)
    records, trainable_SR, losses_SRT = tune_group(
        method, cfg, base_S, T.parse_mixture("add1"), group_runs(method, [1], [3e-2]), [0], 40, batch_size=16,
        chunk=20, eval_samples=16, progress=False)
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(trainable_SR)}
    assert paths == set(expected_paths)
    assert records[0]["trainable_params"] == method.n_params(cfg, None) == expected_params
    assert jax.tree.all(jax.tree.map(lambda a, b: (np.asarray(a) == b).all(), base_S, before))
    start = {"/".join(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(base_S)}
    for p, v in nnx.to_flat_state(trainable_SR):
        assert not np.array_equal(np.asarray(v)[:, 0], start["/".join(map(str, p))])  # every selected weight moved
    assert losses_SRT[0, 0, -10:].mean() < losses_SRT[0, 0, :10].mean()
