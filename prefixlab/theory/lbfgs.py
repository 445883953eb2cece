"""L-BFGS (optax, zoom line search) with restarts, vmapped: the best loss over restarts and its parameters.
Used for "can it be fit exactly" questions, where Adam plateaus would confound expressivity with optimisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_lbfgs(loss_fn, steps: int = 500):
    """A jitted fn(params0_R, aux) -> (loss_R, params_R): L-BFGS on loss_fn(params, aux) from each of R starts.
    `aux` is shared by all restarts and traced, so changing it (e.g. a prompt mask) does not recompile."""
    opt = optax.lbfgs()

    def one(p0, aux):
        f = lambda p: loss_fn(p, aux)
        vg = optax.value_and_grad_from_state(f)

        def step(carry, _):
            p, s = carry
            v, g = vg(p, state=s)
            u, s = opt.update(g, s, p, value=v, grad=g, value_fn=f)
            return (optax.apply_updates(p, u), s), v

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        v = f(p)
        return jnp.where(jnp.isfinite(v), v, jnp.inf), p

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def lbfgs_min(loss_fn, params0_R, steps: int = 500):
    """Minimise loss_fn(params) from each of R initial points (leading axis of every leaf of params0_R)."""
    losses_R, params_R = make_lbfgs(lambda p, _: loss_fn(p), steps)(params0_R, 0.0)
    i = jnp.argmin(losses_R)
    return float(losses_R[i]), jax.tree.map(lambda x: x[i], params_R)
