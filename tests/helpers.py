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


def flat_paths(tree) -> dict:
    """{"a/b/c": leaf} of an nnx.State or a dict of arrays (a context method's parameters)."""
    from flax import nnx

    if isinstance(tree, nnx.State):
        return {"/".join(map(str, p)): v for p, v in nnx.to_flat_state(tree)}
    name = lambda k: str(getattr(k, "key", getattr(k, "idx", k)))
    return {"/".join(map(name, p)): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def check_trains_only(method, expected_paths, expected_params, context_len: int = 2):
    """A method on the tiny model (a context method at `context_len` slots): it trains exactly `expected_paths`
    (and they move), counts `expected_params`, leaves the frozen base bit-identical, and its loss goes down.
    Training only (the sweep tests cover evaluation), so the check stays cheap."""
    import numpy as np

    from prefixlab import tasks as T
    from prefixlab.methods import RunData
    from prefixlab.train import init_params, lm_loss, make_optimizer, OptimConfig, run_keys, run_training

    cfg, task = preset("tiny", dropout=0.0), T.parse_mixture("add1")
    _, base_R = init_params(cfg, run_keys([0]))
    base = jax.tree.map(lambda x: x[0], base_R)
    before = jax.tree.map(np.array, base)
    P = context_len if method.uses_context else 0
    graphdef, run_data = method.graphdef(cfg), RunData(jnp.ones((1, P), bool))
    trainable_R = jax.vmap(lambda k: method.init(k, cfg, base, P))(run_keys([1]))
    start_R = jax.tree.map(np.array, trainable_R)

    def loss_fn(trainable, frozen, run_data, key):
        model, ctx = method.build(graphdef, trainable, frozen, run_data, cfg)
        return lm_loss(model, task.batch(key, 16), ctx, None)

    trainable_R, losses_RU, _ = run_training(loss_fn, trainable_R, base, run_data, jnp.array([3e-2]),
                                             make_optimizer(OptimConfig(weight_decay=0.0)), run_keys([2]), 40, 20,
                                             progress=False)
    trained, started = flat_paths(trainable_R), flat_paths(start_R)
    assert set(trained) == set(expected_paths)
    assert method.n_params(cfg, P or None) == expected_params
    assert jax.tree.all(jax.tree.map(lambda a, b: (np.asarray(a) == b).all(), base, before))
    for p, v in trained.items():
        assert not np.array_equal(np.asarray(v), np.asarray(started[p])), p  # every trained weight moved
    assert losses_RU[0, -10:].mean() < losses_RU[0, :10].mean()
