"""Hard-prompt optimisation: exhaustive search over all V^P prompts when there are at most 10,000,
otherwise greedy coordinate search (each position in turn takes its best token; repeated sweeps)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MAX_EXHAUSTIVE = 10_000


def _all_prompts(V: int, P: int) -> jax.Array:
    """(V^P, P) int32: every prompt, as base-V digits."""
    n = np.arange(V**P)
    return jnp.asarray(np.stack([(n // V ** (P - 1 - i)) % V for i in range(P)], axis=1), jnp.int32)


def search_prompt(loss_of_ids, V: int, P: int, key, sweeps: int = 2, chunk: int = 500):
    """Minimises `loss_of_ids(ids_P) -> scalar` over hard prompts of length P.
    Returns (best ids_P, its loss, candidates evaluated)."""
    chunk = min(chunk, V**P) if V**P <= MAX_EXHAUSTIVE else V
    batched = jax.jit(lambda ids_CP: jax.lax.map(jax.vmap(loss_of_ids), ids_CP.reshape(-1, chunk, P)).reshape(-1))

    def losses_of(cands_CP):  # loss of every candidate, `chunk` at a time
        pad = (-cands_CP.shape[0]) % chunk
        padded = jnp.concatenate([cands_CP, jnp.zeros((pad, P), jnp.int32)]) if pad else cands_CP
        return batched(padded)[: cands_CP.shape[0]]

    if V**P <= MAX_EXHAUSTIVE:
        cands = _all_prompts(V, P)
        losses = losses_of(cands)
        best = int(jnp.argmin(losses))
        return cands[best], float(losses[best]), cands.shape[0]
    ids = jax.random.randint(key, (P,), 0, V, dtype=jnp.int32)
    best_loss, evaluated = float("inf"), 0
    for _ in range(sweeps):
        for pos in range(P):
            cands = jnp.tile(ids, (V, 1)).at[:, pos].set(jnp.arange(V, dtype=jnp.int32))
            losses = losses_of(cands)
            evaluated += V
            tok = int(jnp.argmin(losses))
            ids, best_loss = cands[tok], float(losses[tok])
    return ids, best_loss, evaluated
