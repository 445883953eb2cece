"""Random weights at a chosen scale, so identities are tested where attention is far from uniform."""

from __future__ import annotations

import jax
from flax import nnx


def randomize_params(model, key, std: float = 0.5):
    """Every nnx.Param of `model` redrawn as N(0, std^2) (LayerNorm scales as 1 + N(0, std^2)), in place."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    new = [jax.random.normal(k, x.shape, x.dtype) * std for k, x in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, new))
    for block in model.blocks:
        for ln in (block.ln1, block.ln2):
            if ln is not None:
                ln.scale[...] = ln.scale[...] + 1.0
    return model
