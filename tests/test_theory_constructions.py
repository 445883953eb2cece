"""Petrov's constructions on random targets, decoded by the project's own greedy_generate."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefixlab.decode import greedy_generate
from prefixlab.theory import conditional, decoder_exact, max_vocab_two_token, responses, two_token, unconditional


pytestmark = pytest.mark.usefixtures("x64_module")  # float64 for the whole module


@pytest.mark.parametrize("V,N,dtype", [(94, 20, "float64"), (94, 20, "float32"), (7, 3, "float64")])
def test_unconditional_random_targets(V, N, dtype):
    Y = np.random.default_rng(V + N).integers(0, V, N)
    model, ctx = unconditional(Y, V, dtype=dtype)
    assert ctx.length == 1 and model.cfg.n_layer == 1 and model.cfg.n_head == 2
    out = greedy_generate(model, jnp.zeros((2, 1), jnp.int32), N, ctx)
    np.testing.assert_array_equal(np.asarray(out), np.stack([Y, Y]))
    # without the virtual token the model cannot know the targets
    plain = np.asarray(greedy_generate(model, jnp.zeros((1, 1), jnp.int32), N, None))[0]
    assert not (plain == Y).all()


@pytest.mark.parametrize("dtype", ["float32"])
def test_conditional_random_map(dtype):
    V = 25
    m = np.random.default_rng(1).integers(0, V, V)
    model, ctx = conditional(m, V, dtype=dtype)
    out = greedy_generate(model, jnp.arange(V)[:, None], 1, ctx)
    np.testing.assert_array_equal(np.asarray(out[:, 0]), m)


def test_responses_random_sequences():
    V, N0 = 12, 5
    M = np.random.default_rng(2).integers(0, V, (V, N0))
    model, ctx = responses(M, V)
    assert ctx.length == N0
    np.testing.assert_array_equal(np.asarray(greedy_generate(model, jnp.arange(V)[:, None], N0, ctx)), M)


@pytest.mark.parametrize("V,dtype", [(9, "float64"), (5, "float32")])
def test_two_token_random_pairs(V, dtype):
    M = np.random.default_rng(V).integers(0, V, (V, V))
    model, ctx = two_token(M, V, dtype=dtype)
    assert model.cfg.n_layer == 2 and ctx.length == 1
    pairs = jnp.stack(jnp.meshgrid(jnp.arange(V), jnp.arange(V), indexing="ij"), -1).reshape(-1, 2)
    out = np.asarray(greedy_generate(model, pairs, 1, ctx))[:, 0]
    np.testing.assert_array_equal(out, M.reshape(-1))


def two_token_wrong_maps(V: int, dtype: str, n_maps: int, seed: int = 0) -> int:
    """How many of `n_maps` random maps (i, j) -> m(i, j) the two-token construction decodes wrongly somewhere.
    The weights do not depend on the map (only the virtual token does), so one compiled decoder serves them all."""
    g = np.random.default_rng(seed)
    maps = [g.integers(0, V, (V, V)) for _ in range(n_maps)]
    model, ctx0 = two_token(maps[0], V, dtype=dtype)
    pairs = jnp.stack(jnp.meshgrid(jnp.arange(V), jnp.arange(V), indexing="ij"), -1).reshape(-1, 2)
    decode = jax.jit(lambda embeds_PD: greedy_generate(model, pairs, 1, dataclasses.replace(ctx0, embeds_PD=embeds_PD))[:, 0])
    wrong = 0
    for M in maps:
        other, ctx = two_token(M, V, dtype=dtype)
        assert other.cfg == model.cfg
        wrong += bool((np.asarray(decode(ctx.embeds_PD)) != M.reshape(-1)).any())
    return wrong


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_token_exact_on_200_random_maps_at_the_guaranteed_size(dtype):
    assert two_token_wrong_maps(max_vocab_two_token(dtype), dtype, 200) == 0


def test_two_token_beyond_float32_limit_fails():
    """Packing V digits into one float32 scalar must break for large V (the documented limit is real)."""
    V = 10
    M = np.random.default_rng(0).integers(0, V, (V, V))
    model, ctx = two_token(M, V, dtype="float32")
    pairs = jnp.stack(jnp.meshgrid(jnp.arange(V), jnp.arange(V), indexing="ij"), -1).reshape(-1, 2)
    out = np.asarray(greedy_generate(model, pairs, 1, ctx))[:, 0]
    assert (out != M.reshape(-1)).any()


def test_decoder_margin_float32():
    assert decoder_exact(1000, "float32")
    assert not decoder_exact(4000, "float32")
