"""Greedy decoding with a key/value cache and fixed shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prefixlab.model import Context, Transformer


def greedy_generate(model: Transformer, inputs_BN, n_new: int, ctx: Context | None = None):
    """Greedy continuation of `inputs_BN` by `n_new` tokens. One prefill over the inputs into a cache sized for
    the whole sequence, then `lax.scan` of cached single-token steps: shapes never change, so nothing
    recompiles per token."""
    B, N = inputs_BN.shape
    logits_BTV, cache = model.prefill(inputs_BN, ctx, cache_len=N + n_new - 1)
    first_B = jnp.argmax(logits_BTV[:, N - 1], axis=-1).astype(inputs_BN.dtype)

    def step(carry, t):
        tok_B, cache = carry
        logits_BV, cache = model.decode_step(tok_B, N + t, cache, ctx)
        nxt_B = jnp.argmax(logits_BV, axis=-1).astype(tok_B.dtype)
        return (nxt_B, cache), nxt_B

    _, rest_TB = jax.lax.scan(step, (first_B, cache), jnp.arange(n_new - 1))
    return jnp.concatenate([first_B[:, None], rest_TB.T], axis=1)
