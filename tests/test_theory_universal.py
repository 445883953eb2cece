"""prefixlab.theory.universal: the single frozen head of Petrov et al.'s universal approximation (natural
construction on S^1), checked as a plain softmax head, on the project's Attention module, and for its rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefixlab.theory import universal as U

pytestmark = pytest.mark.usefixtures("x64_module")  # float64 for the whole module


def _weights():
    return tuple(jnp.asarray(w) for w in U.head_weights())


def test_float64():
    s = U.construction(U.TARGETS["sin3t"], 8)
    assert s.dtype == jnp.float64
    assert U.head_out(s, U.dense_t(16), _weights()).dtype == jnp.float64


def test_head_is_plain_softmax_attention():
    """Output = softmax(q K^T) V over [prefix ++ the query itself], written out directly from random weights-free
    arithmetic: q = scale x, keys = slot coords 2,3 (and 0 for the query), values = slot coord 4 (and 0)."""
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(7, U.D)) * 0.01)
    t = jnp.asarray(rng.uniform(0, 2 * np.pi, 11))
    x = np.stack([np.cos(t), np.sin(t)], -1)
    keys = np.concatenate([np.asarray(s)[:, 2:4], np.zeros((1, 2))])
    vals = np.concatenate([np.asarray(s)[:, 4], [0.0]])
    sc = U.HEAD_SCALE * x @ keys.T
    p = np.exp(sc - sc.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(U.head_out(s, t, _weights())), p @ vals, rtol=1e-12, atol=1e-14)


def test_same_as_project_attention_module():
    """The pure-jnp head equals the project's own Attention.qkv/attend on the same weights."""
    model = U.head_model()
    f = U.TARGETS["bump"]
    s = U.construction(f, 16, U.BETA_SMOOTH)
    t = U.dense_t(64)
    np.testing.assert_allclose(np.asarray(U.model_head_out(model, s, t)), np.asarray(U.head_out(s, t, _weights())),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("beta", [U.BETA_SHARP, U.BETA_SMOOTH])
def test_construction_error_falls_with_N(beta):
    f, w = U.TARGETS["sin3t"], _weights()
    errs = [U.sup_error(U.construction(f, N, beta), f, w, n=2048) for N in (16, 32, 64, 128)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < (0.08 if beta == U.BETA_SHARP else 0.02)  # 3 pi / 128 = 0.074 bounds the sharp one


def test_sharp_construction_within_first_order_jackson_form():
    """Sharp keys: the head is a nearest-key lookup, so sup-error <= omega_f(pi / N) (up to the tiny softmax leak)."""
    w = _weights()
    for name, f in U.TARGETS.items():
        for N in (8, 32, 128):
            assert U.sup_error(U.construction(f, N, U.BETA_SHARP), f, w, n=2048) <= U.modulus(f, np.pi / N, 2048) + 1e-6


def test_train_prefix_reduces_error_fast():
    f, w = U.TARGETS["sin3t"], _weights()
    s_SND, loss_S = U.train_prefix(f, 8, (0, 1), w, steps=300, batch=128)
    assert s_SND.shape == (2, 8, U.D) and s_SND.dtype == jnp.float64
    assert float(loss_S.mean()) < 0.5  # below the mean square of sin(3t) (0.5): it learned something
