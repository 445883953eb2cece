"""Wang's single-layer limitation: prompts cannot fit the shared-token dataset (certified), weights can."""

import jax
import numpy as np
import pytest

from prefixlab.theory import wang


pytestmark = pytest.mark.usefixtures("x64_module")  # float64 for the whole module


def test_mlp_inverse():
    p = wang.make_problem(4, 3)
    z = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(wang.mlp_inverse(p.weights, wang.mlp_forward(p.weights, z)), z, atol=1e-12)
    assert p.L < 1


@pytest.mark.parametrize("d,seed", [(2, 0), (4, 1)])
def test_prompt_cannot_fit_but_lora_rank2_can(d, seed):
    p = wang.make_problem(d, seed)
    cert = wang.certificate(p)
    assert cert["bound"] > 1e-3
    best = wang.fit_prompt(p, [1, 3], restarts=4, steps=200)
    assert min(best.values()) >= cert["bound"]
    # the prompt search gets near the relaxed (d+1)-number optimum: the optimiser is not what fails
    assert min(best.values()) <= 1.5 * wang.relaxed_optimum(p, restarts=8, steps=200) + 1e-6
    assert wang.fit_lora(p, 2, restarts=4, steps=300) < 1e-8
    assert wang.fit_lora(p, 1, restarts=4, steps=300) > 1e-3


def test_positive_control_hidden_prompt_is_fit():
    p = wang.make_problem(4, 2)
    y = wang.hidden_prompt_targets(p, 2)
    assert wang.fit_prompt(p, [2], restarts=4, steps=300, targets=y)[2] < 1e-8


def test_prompt_scan_doubles_until_the_best_mse_stops_falling():
    p = wang.make_problem(2, 0)
    best = wang.scan_prompt_lengths(p, first=2, rel_tol=1e-3, max_len=16, restarts=2, steps=60)
    doubled = sorted(m for m in best if m > 2)
    assert list(best)[:2] == [1, 2] and doubled == [2 ** k for k in range(2, 2 + len(doubled))]
    last = doubled[-1]
    before = min(v for m, v in best.items() if m < last)
    assert last == 16 or best[last] >= before * (1 - 1e-3)  # ended at the cap or where it stopped falling
    for m in doubled[:-1]:  # every earlier doubling still fell
        assert best[m] < min(v for k, v in best.items() if k < m) * (1 - 1e-3)
