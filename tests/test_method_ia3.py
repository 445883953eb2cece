import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prefixlab.config import preset
from prefixlab.methods import MethodError, RunData, get_method
from tests.helpers import check_trains_only, tiny_model, tokens

TINY_SCALES = [f"blocks/{b}/{m}/ia3_scale" for b in (0, 1) for m in ("attn/k", "attn/v", "mlp/layers/1")]


def test_ia3_trains_the_k_v_and_mlp_hidden_scales_only():
    # tiny, per block: k and v outputs 16 each, the MLP hidden (proj's input) 64
    check_trains_only(get_method("ia3"), TINY_SCALES, 2 * (16 + 16 + 64))


def test_ia3_at_init_equals_the_base_and_a_scale_acts_where_peft_puts_it():
    cfg, ia3 = preset("tiny", dropout=0.0), get_method("ia3")
    base = nnx.state(tiny_model(0))
    run = lambda tr: ia3.build(ia3.graphdef(cfg), tr, base, RunData(jnp.ones(0, bool)), cfg)[0](tokens(7))
    scales = ia3.init(jax.random.key(1), cfg, base, 0)
    np.testing.assert_allclose(run(scales), tiny_model(0)(tokens(7)), rtol=0, atol=1e-6)  # float32 rounding only
    # scaling proj's input (the MLP hidden) by 2 doubles its kernel, not its bias
    doubled = nnx.state(tiny_model(0))
    for b in (0, 1):
        doubled["blocks"][b]["mlp"]["layers"][1]["kernel"][...] *= 2
    scaled = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 2 if "layers" in jax.tree_util.keystr(p) else x, scales)
    want = nnx.merge(nnx.graphdef(tiny_model(0)), doubled)(tokens(7))
    np.testing.assert_allclose(run(scaled), want, atol=1e-5)


def test_ia3_feedforward_must_be_a_target():
    with pytest.raises(MethodError, match="among its targets"):
        get_method("ia3", targets=("k", "v"), feedforward=("proj",))
