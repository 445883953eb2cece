"""What only prefix_memory does (the registry-wide checks are in tests/test_method_conformance.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prefixlab.analysis import attention_maps
from prefixlab.config import preset
from prefixlab.methods import MethodError, RunData, get_method
from tests.helpers import tiny_model, tokens

CFG = preset("tiny", dropout=0.0)  # 2 layers, 2 heads, head dim 8


def _built(method, P=3, valid=3, moved=True, seed=0):
    """The tiny base and a prefix_memory context; `moved`: M (and A) moved off init, so the term is not zero."""
    base = nnx.state(tiny_model(seed))
    tr = method.init(jax.random.key(1), CFG, base, P)
    if moved:
        tr = {k: v + 0.3 * jax.random.normal(jax.random.key(i + 2), v.shape) for i, (k, v) in enumerate(tr.items())}
    model, ctx = method.build(method.graphdef(CFG), tr, base, RunData(jnp.arange(P) < valid), CFG)
    return model, ctx, tr


def test_parameter_count_matches_prefix_kv_at_every_length():
    pm, kv = get_method("prefix_memory"), get_method("prefix_kv")
    for p in (1, 3, 8):
        assert pm.n_params(CFG, p) == kv.n_params(CFG, p) == 2 * 2 * 2 * 8 * p  # L * H * 2 * K * p
    assert get_method("prefix_memory", features_per_slot=2).n_params(CFG, 3) == 2 * kv.n_params(CFG, 3)
    with pytest.raises(MethodError):
        get_method("prefix_memory", features_per_slot=0)


def test_zero_memory_is_the_base_bit_for_bit():
    model, ctx, _ = _built(get_method("prefix_memory"), moved=False)
    assert ctx.length == 0  # no slots in the stream: only the term acts
    run = jax.jit(lambda m, c, t: m(t, c))
    np.testing.assert_array_equal(run(model, ctx, tokens(7)), run(tiny_model(0), None, tokens(7)))


def test_cached_decoding_equals_the_full_forward_pass():
    model, ctx, _ = _built(get_method("prefix_memory"))
    toks = tokens(5, B=4)
    full = model(toks, ctx)
    assert float(jnp.abs(full - tiny_model(0)(toks)).max()) > 1e-2  # the term acts
    logits, cache = model.prefill(toks[:, :10], ctx, cache_len=19)
    np.testing.assert_allclose(logits, full[:, :10], atol=1e-5)
    decode = jax.jit(lambda m, tok, t, cache, c: m.decode_step(tok, t, cache, c))  # one program for every step
    for t in range(10, 19):
        step, cache = decode(model, toks[:, t], t, cache, ctx)
        np.testing.assert_allclose(step, full[:, t], atol=1e-5, err_msg=f"position {t}")


def test_the_term_leaves_the_attention_weights_of_its_layer_unchanged():
    """Outside the softmax: layer 0 (whose input the term cannot reach) attends exactly as the base, and its head
    output differs from the base's by phi(q)^T M alone; later layers see a changed input."""
    model, ctx, tr = _built(get_method("prefix_memory"))
    base, toks = tiny_model(0), tokens(3, B=4)
    with_term, without = attention_maps(model, toks, ctx), attention_maps(base, toks, None)
    np.testing.assert_array_equal(with_term[0], without[0])
    assert np.abs(with_term[1] - without[1]).max() > 0  # upstream change reaches layer 1's input
    # layer 0's attention output = the base's + W_o phi(q)^T M
    x = base.embed(toks, jnp.arange(19))
    blk = base.blocks[0]
    q, k, v = blk.attn.qkv(blk.ln1(x))
    allowed = jnp.tril(jnp.ones((19, 19), bool))
    base_out, _ = blk.attn.attend(q, k, v, allowed, None)
    term = ctx.terms[0]
    added = jnp.einsum("bqhf,hfk->bqhk", term.features(0, q), tr["memory_LHFK"][0]).reshape(4, 19, -1)
    got, _ = blk.attn.attend(q, k, v, allowed, None, lambda o: term.head_output(0, q, o, None))
    np.testing.assert_allclose(got, base_out + added @ blk.attn.o.kernel[...], atol=1e-5)


def test_a_shorter_run_padded_equals_its_exact_length():
    method = get_method("prefix_memory")
    model3, ctx3, tr = _built(method, P=3, valid=1)
    exact = {k: v[..., :1] if k == "proj_LHKF" else v[:, :, :1] for k, v in tr.items()}
    model1, ctx1 = method.build(method.graphdef(CFG), exact, nnx.state(tiny_model(0)), RunData(jnp.ones(1, bool)), CFG)
    np.testing.assert_allclose(model3(tokens(2), ctx3), model1(tokens(2), ctx1), atol=1e-6)
