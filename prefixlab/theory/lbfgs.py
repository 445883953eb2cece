"""L-BFGS (optax, zoom line search) with restarts, vmapped: the best loss over restarts and its parameters.
Used for "can it be fit exactly" questions, where Adam plateaus would confound expressivity with optimisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def lbfgs_min(loss_fn, params0_R, steps: int = 500):
    """Minimise loss_fn(params) from each of R initial points (leading axis of every leaf of params0_R)."""
    opt = optax.lbfgs()
    vg = optax.value_and_grad_from_state(loss_fn)

    def one(p0):
        def step(carry, _):
            p, s = carry
            v, g = vg(p, state=s)
            u, s = opt.update(g, s, p, value=v, grad=g, value_fn=loss_fn)
            return (optax.apply_updates(p, u), s), v

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        v = loss_fn(p)
        return jnp.where(jnp.isfinite(v), v, jnp.inf), p

    losses_R, params_R = jax.jit(jax.vmap(one))(params0_R)
    i = jnp.argmin(losses_R)
    return float(losses_R[i]), jax.tree.map(lambda x: x[i], params_R)
