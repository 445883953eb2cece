"""Wang E3 (prompt length needed = K for reachable targets; LoRA on W2 needs rank min(K, d)) and E4 (two inputs,
same output: certified impossible for prompts through invertible layers, easy for weights)."""

import jax
import numpy as np
import pytest

from prefixlab.theory import wang_scan as S


pytestmark = pytest.mark.usefixtures("x64_module")  # float64 for the whole module


def test_scan_prompt_needs_K_tokens_lora_needs_rank_min_K_d():
    rows = S.param_scan(d=2, r=8, Ks=(3,), max_len=4, restarts=4, steps=300)
    reach = next(r for r in rows if r["targets"] == "reachable")
    assert reach["min_prompt_len"] == 3 and reach["prompt_params"] == 6
    assert reach["prompt_mse"][2] > 1e-6  # one token short: the count argument bites
    assert reach["min_lora_rank"] == 2 and reach["lora_params"] == 20
    assert reach["lora_mse"][1] > 1e-6


def test_two_inputs_same_output_invertible_vs_collapse():
    inv = S.two_inputs(d=3, r=8, seed=0, lengths=(1, 3), restarts=4, steps=200)
    assert inv["cert"]["bound"] > 1e-4 and inv["cert"]["kappa"] > 0
    assert inv["best_prompt"] >= inv["cert"]["bound"]
    assert inv["x1_alone_len2"] < 1e-8  # each input alone is reachable
    assert inv["lora2_proj"] < 1e-8 and inv["full"] < 1e-8
    col = S.two_inputs(d=3, r=8, seed=0, lengths=(1, 3), restarts=4, steps=200, collapse=True)
    assert col["cert"]["kappa"] == 0
    assert col["best_prompt"] < 0.1 * inv["best_prompt"]


def test_certificate_is_a_real_lower_bound_for_random_prompts():
    st = S.two_input_problem(3, 8, 1)
    cert = S.two_input_certificate(st)
    tokens = np.array([[1], [2]])
    for seed in range(3):
        out = np.asarray(S.hidden_prompt_outputs(st, tokens, 2 + seed, seed))
        gap = np.sum((out[0] - out[1]) ** 2)
        assert gap >= 4 * st.d * cert["bound"] * (1 - 1e-12)
