import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prefixlab.config import preset
from prefixlab.model import Context, ContextTerm, Transformer, count_params
from tests.helpers import tiny_model, tokens


def test_logits_shape_and_dtype():
    m = tiny_model()
    out = m(tokens())
    chex.assert_shape(out, (3, 19, 10))
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("ctx_kind", [None, "embeds", "layer_inputs"])
def test_causality(ctx_kind):
    """The output at position i does not change when tokens after i change."""
    m = tiny_model()
    ctx = None
    if ctx_kind == "embeds":
        ctx = Context(jnp.ones(2, bool), embeds_PD=jax.random.normal(jax.random.key(1), (2, 16)))
    elif ctx_kind == "layer_inputs":
        ctx = Context(jnp.ones(2, bool), layer_inputs_LPD=jax.random.normal(jax.random.key(1), (2, 2, 16)))
    x = tokens(0)
    base = m(x, ctx)
    for i in [0, 5, 17]:
        y = x.at[:, i + 1:].set((x[:, i + 1:] + 3) % 10)
        out = m(y, ctx)
        np.testing.assert_allclose(out[:, : i + 1], base[:, : i + 1], atol=1e-6)
        assert not np.allclose(out[:, i + 1:], base[:, i + 1:])


def test_bidirectional_switch_breaks_causality():
    m = tiny_model(causal=False)
    x = tokens(0)
    y = x.at[:, -1].set((x[:, -1] + 1) % 10)
    assert not np.allclose(m(x)[:, 0], m(y)[:, 0])


def test_same_seed_same_parameters():
    a, b, c = nnx.state(tiny_model(1)), nnx.state(tiny_model(1)), nnx.state(tiny_model(2))
    chex.assert_trees_all_equal(a, b)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


def test_float64_switch(x64):
    m = tiny_model(dtype="float64")
    assert m.tok_emb[...].dtype == jnp.float64
    assert m(tokens()).dtype == jnp.float64


def test_float64_without_x64_is_a_clear_error():
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 already on in this process")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        tiny_model(dtype="float64")


@pytest.mark.parametrize("name, expected", [
    ("paper-exp1", 115_776), ("paper-exp2", 799_744), ("paper-exp3", 3_169_536),
])
def test_preset_parameter_counts(name, expected):
    cfg = preset(name)
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    assert count_params(nnx.state(abstract)) == expected


def test_paper_exp3_is_3_17_million():
    cfg = preset("paper-exp3")
    n = count_params(nnx.state(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))))
    assert round(n / 1e6, 2) == 3.17


def test_switches_change_structure():
    m = tiny_model(ln_attn=False, residual_mlp=False, mlp_hidden=(8, 8), activation="relu", head_bias=True)
    assert m.blocks[0].ln1 is None and len(m.blocks[0].mlp.layers) == 3
    assert m.head.bias is not None
    chex.assert_tree_all_finite(m(tokens()))


def test_attention_scale_switch():
    x = tokens()
    a = tiny_model(attn_scale=0.01)(x)
    b = tiny_model(attn_scale=10.0)(x)
    assert not np.allclose(a, b)


def test_reference_init_statistics():
    cfg = preset("paper-exp3")
    m = Transformer(cfg, rngs=nnx.Rngs(params=jax.random.key(0)))
    assert abs(float(m.blocks[0].attn.q.kernel[...].std()) - 0.02) < 0.001
    assert abs(float(m.blocks[0].mlp.layers[-1].kernel[...].std()) - 0.02 / np.sqrt(8)) < 0.0005
    assert float(jnp.abs(m.blocks[0].attn.q.bias[...]).max()) == 0.0


def assert_decoding_matches_full_forward(m, x, ctx, prompt_len=12):
    full = m(x, ctx)
    logits, cache = m.prefill(x[:, :prompt_len], ctx, cache_len=x.shape[1])
    np.testing.assert_allclose(logits, full[:, :prompt_len], atol=1e-5)
    for t in range(prompt_len, x.shape[1]):
        step, cache = m.decode_step(x[:, t], t, cache, ctx)
        np.testing.assert_allclose(step, full[:, t], atol=1e-5)


def test_prefill_and_decode_match_full_forward():
    ctx = Context(jnp.array([True, False]), layer_inputs_LPD=jax.random.normal(jax.random.key(1), (2, 2, 16)))
    assert_decoding_matches_full_forward(tiny_model(), tokens(4), ctx)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Shift(ContextTerm):
    """A context kind the model does not know: a vector added to every row's input at every layer (content too)."""

    shift_LD: jax.Array

    def layer_input(self, layer, x_BQD, at):
        return x_BQD + self.shift_LD[layer][None, None].astype(x_BQD.dtype)


def test_a_new_context_term_reaches_forward_prefill_and_cached_decoding():
    """Defect C (468b134: Block.__call__ and Block.decode each called the attention pieces and decode_step rebuilt
    the mask, so a context kind added to the forward pass only was lost by decoding after the first token): a term
    defined outside the model is applied alike by the full forward pass, prefill and every cached decoding step,
    beside the built-in kinds and the slot mask."""
    from prefixlab.decode import greedy_generate

    m = tiny_model()
    shift = Shift(jax.random.normal(jax.random.key(5), (2, 16)))
    ctx = Context(jnp.array([True, False]), layer_inputs_LPD=jax.random.normal(jax.random.key(1), (2, 2, 16)),
                  terms=(shift,))
    x = tokens(4, B=16)
    assert_decoding_matches_full_forward(m, x, ctx)
    preds = greedy_generate(m, x[:, :10], 9, ctx)
    recomputed = m(jnp.concatenate([x[:, :10], preds[:, :-1]], axis=1), ctx, logits_from=9).argmax(-1)
    np.testing.assert_array_equal(preds, recomputed)
    without = greedy_generate(m, x[:, :10], 9, dataclasses.replace(ctx, terms=()))
    assert (np.asarray(preds) != np.asarray(without)).any()  # the term changes what is decoded


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        tiny_model()(tokens(T=25))
