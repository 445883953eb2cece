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
    """A weight-subset or weight-adapter method on the tiny model: it trains exactly `expected_paths` (and they move),
    counts `expected_params`, leaves the frozen base bit-identical, and its loss goes down. Training only (the
    sweep tests cover evaluation), so the check stays cheap."""
    import numpy as np
    from flax import nnx

    from prefixlab import tasks as T
    from prefixlab.methods import RunData
    from prefixlab.train import init_params, lm_loss, make_optimizer, OptimConfig, run_keys, run_training

    cfg, task = preset("tiny", dropout=0.0), T.parse_mixture("add1")
    _, base_R = init_params(cfg, run_keys([0]))
    base = jax.tree.map(lambda x: x[0], base_R)
    before = jax.tree.map(np.array, base)
    graphdef, no_context = method.graphdef(cfg), RunData(jnp.zeros((1, 0), bool))
    trainable_R = jax.vmap(lambda k: method.init(k, cfg, base, 0))(run_keys([1]))
    start_R = jax.tree.map(np.array, trainable_R)

    def loss_fn(trainable, frozen, run_data, key):
        model, ctx = method.build(graphdef, trainable, frozen, run_data, cfg)
        return lm_loss(model, task.batch(key, 16), ctx, None)

    trainable_R, losses_RU, _ = run_training(loss_fn, trainable_R, base, no_context, jnp.array([3e-2]),
                                             make_optimizer(OptimConfig(weight_decay=0.0)), run_keys([2]), 40, 20,
                                             progress=False)
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(trainable_R)}
    assert paths == set(expected_paths)
    assert method.n_params(cfg, None) == expected_params
    assert jax.tree.all(jax.tree.map(lambda a, b: (np.asarray(a) == b).all(), base, before))
    for (p, v), (_, v0) in zip(nnx.to_flat_state(trainable_R), nnx.to_flat_state(start_R)):
        assert not np.array_equal(np.asarray(v), v0), p  # every trained weight moved
    assert losses_RU[0, -10:].mean() < losses_RU[0, :10].mean()
