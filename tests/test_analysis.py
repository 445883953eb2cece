import jax
import numpy as np

from prefixlab.analysis import attention_block_outputs, attention_maps, content_attention_shift, prefix_attention_spread
from prefixlab.theory.attention import random_context
from tests.helpers import tiny_model, tokens


def test_prefixes_only_rescale_first_layer_content_attention():
    model = tiny_model()
    toks = tokens(B=4)
    ctxs = [random_context(model.cfg, jax.random.key(i), 3, "layer_inputs") for i in range(3)]
    shift = content_attention_shift(model, toks, ctxs)  # 19 query positions: input 10 + target 10 - 1
    assert shift.max_abs < 1e-5 and shift.rows == 3 * 4 * 2 * 19 and shift.skipped == 0
    probs = attention_maps(model, toks, ctxs[0])
    assert len(probs) == 2 and probs[0].shape == (4, 2, 22, 22)
    np.testing.assert_allclose(probs[0].sum(-1), 1.0, rtol=1e-5)


def test_block_outputs_and_spread_shapes():
    model = tiny_model()
    toks = tokens(B=6)
    ctx = random_context(model.cfg, jax.random.key(0), 2, "layer_inputs")
    out = attention_block_outputs(model, toks, ctx, position=9)
    base = attention_block_outputs(model, toks, None, position=9)
    assert out.shape == base.shape == (6, 16) and not np.allclose(out, base)
    spread = prefix_attention_spread(model, toks, ctx, query=9)
    assert spread.shape == (2, 2) and (spread >= 0).all()


def test_rows_the_prefix_takes_whole_are_skipped_not_nan():
    model = tiny_model()
    toks = tokens(B=4)
    ctx = random_context(model.cfg, jax.random.key(0), 1, "kv", scale=1e4)  # scores ~1e4: some rows all-prefix
    shift = content_attention_shift(model, toks, [ctx])
    assert shift.skipped > 0 and shift.rows + shift.skipped == 4 * 2 * 19
    assert np.isfinite(shift.max_abs) and shift.max_abs < 1e-5
