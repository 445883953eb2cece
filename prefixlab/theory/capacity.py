"""Capacity count (Petrov et al. section 3): distinct greedy completions reachable from one hard token vs one
virtual token. Both are fed the same way, as a length-1 soft prompt (`embeds_PD`): a hard token is its token
embedding, a virtual token is any vector. The content is a fixed start token; n_new tokens are decoded greedily
by the project's `greedy_generate`. One hard token reaches at most V completions; a virtual token is not bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab.decode import greedy_generate
from prefixlab.model import Context, Transformer


def _completions(model: Transformer, embeds_RD, n_new: int, start_token: int, batch: int = 512):
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, e_RD):
        m = nnx.merge(graphdef, state)
        start = jnp.full((1, 1), start_token, jnp.int32)
        one = lambda e: greedy_generate(m, start, n_new, Context(jnp.ones((1,), bool), embeds_PD=e[None]))[0]
        return jax.vmap(one)(e_RD)

    pad = (-embeds_RD.shape[0]) % batch
    e = jnp.concatenate([embeds_RD, jnp.zeros((pad, embeds_RD.shape[1]), embeds_RD.dtype)])
    out = [np.asarray(run(state, e[i : i + batch])) for i in range(0, e.shape[0], batch)]
    return np.concatenate(out)[: embeds_RD.shape[0]]


def capacity_count(model: Transformer, key, n_virtual: int = 4096, n_new: int = 8, start_token: int = 0,
                   scale: float | None = None) -> dict:
    """Distinct greedy completions over all V hard tokens and over n_virtual Gaussian virtual tokens
    (std `scale`, default: the token embeddings' own std times 10, so they can leave the embedding cloud)."""
    tok_VD = model.tok_emb[...]
    if scale is None:
        scale = float(jnp.std(tok_VD)) * 10.0
    virt_RD = jax.random.normal(key, (n_virtual, tok_VD.shape[1]), tok_VD.dtype) * scale
    hard = _completions(model, tok_VD, n_new, start_token)
    soft = _completions(model, virt_RD, n_new, start_token)
    n_hard = len({tuple(r) for r in hard})
    n_soft = len({tuple(r) for r in soft})
    return {"vocab_size": int(tok_VD.shape[0]), "n_new": n_new, "n_virtual": n_virtual, "scale": scale,
            "distinct_hard": n_hard, "distinct_virtual": n_soft,
            "distinct_virtual_not_hard": len({tuple(r) for r in soft} - {tuple(r) for r in hard})}
