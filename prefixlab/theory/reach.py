"""How far Petrov's one-virtual-token construction (`constructions.unconditional`) reaches in each precision, for
the capacity scan (prefixlab/cram.py) to draw beside trained contexts.

The construction stores target token j as the number Y_j / V in coordinate j of one virtual token (d = 2N + 1), so
its length N is bounded by the width, not by rounding (limits.py); rounding bounds the vocabulary instead: the
decoder must tell k / V from its neighbours, which needs 1/V^2 above a few units of roundoff. So its bits per token,
log2 V, are what precision buys. Precisions as in cram.py: "bfloat16" = the float32 construction whose matmuls take
bf16 operands (config.compute_dtype), "float32", "float64" (turned on here for the call only).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab.cram import PRECISIONS, precision_scope  # the one place that says how a precision runs
from prefixlab.decode import greedy_generate
from prefixlab.model import abstract_model
from prefixlab.theory.constructions import unconditional


def construction(targets, vocab_size: int, precision: str):
    """(model, ctx) of `unconditional` for `targets`, computing in `precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model, ctx = unconditional(targets, vocab_size, dtype="float32" if precision == "bfloat16" else precision)
    if precision == "bfloat16":  # the same weights, matmul operands rounded to bf16
        model = nnx.merge(abstract_model(model.cfg.replace(compute_dtype="bfloat16"))[0], nnx.state(model))
    return model, ctx


def reach(targets, vocab_size: int, precision: str) -> int:
    """How many leading tokens of `targets` the construction generates exactly (greedy, after the start token)."""
    Y = np.asarray(targets)
    with precision_scope(precision):
        model, ctx = construction(Y, vocab_size, precision)
        out = greedy_generate(model, jnp.zeros((1, 1), jnp.int32), len(Y), ctx)[0]
        return int(np.cumprod(np.asarray(out) == Y).sum())


def decodes_every_token(vocab_size: int, precision: str, rows: int = 512) -> bool:
    """Every token k in [V] comes out right through the construction's own MLP and LM head (N = 1), fed the
    attention output (k / V, e_0, 0) that its hard heads produce: the rounding limit on V (limits.decoder_exact, in
    any of the three precisions)."""
    V = vocab_size
    with precision_scope(precision):
        model, _ = construction([0], V, precision)
        dt = model.cfg.jnp_dtype
        for k0 in range(0, V, rows):  # `rows` tokens at a time: the logits are (rows, V)
            k = np.arange(k0, min(k0 + rows, V))
            x = np.zeros((len(k), 1, model.cfg.d_model))
            x[:, 0, 0] = k / V
            x[:, 0, 1] = 1.0
            logits = model._logits(model.blocks[0].mlp(jnp.asarray(x, dt)))
            if not (np.asarray(jnp.argmax(logits[:, 0], -1)) == k).all():
                return False
        return True


def vocab_limit(precision: str, candidates) -> dict:
    """The largest candidate V that decodes every token exactly and the smallest that does not (None if none
    fails): bits per stored token = log2 of the first."""
    ok = {int(V): decodes_every_token(int(V), precision) for V in candidates}
    good, bad = [V for V, g in ok.items() if g], [V for V, g in ok.items() if not g]
    return {"precision": precision, "largest_exact": max(good) if good else None,
            "smallest_failing": min(bad) if bad else None, "tried": sorted(ok)}

