"""Progress from the program's own ticks: every few steps, for any layout of the runs, without changing results."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prefixlab import host_loop
from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.train import OptimConfig, init_params, lm_loss, make_optimizer, run_keys, run_training

CFG = preset("tiny")
MIX = T.parse_mixture("add1")


@pytest.mark.parametrize("run_batch", [0, 2])
def test_bar_advances_within_a_chunk_and_progress_does_not_change_results(monkeypatch, run_batch):
    graphdef, params_R = init_params(CFG, run_keys([0, 1, 2]))

    def loss_fn(params, _f, _rd, key):
        return lm_loss(nnx.merge(graphdef, params), MIX.batch(key, 8), None, None)

    positions = []  # the bar's position after each tick
    tick = host_loop.ProgressBar.tick
    monkeypatch.setattr(host_loop.ProgressBar, "tick", lambda self, s: (tick(self, s), positions.append(self.bar.n)))
    train = lambda progress: run_training(loss_fn, params_R, None, None, jnp.full((3,), 1e-3),
                                          make_optimizer(OptimConfig()), run_keys([5, 6, 7]), 40, 40,
                                          progress=progress, run_batch=run_batch)
    with_bar, quiet = train(True), train(False)
    passes = 1 if run_batch == 0 else 2  # 3 runs, two at a time
    assert len(positions) == passes * 40 // host_loop.TICK_EVERY
    assert positions == sorted(positions) and 0 < positions[0] < 40 and positions[-1] == 40  # within the one chunk
    np.testing.assert_array_equal(with_bar[1], quiet[1])
    assert host_loop._CURRENT_BAR[0] is None  # closed bars get no ticks
