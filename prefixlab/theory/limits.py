"""How large a vocabulary / length the constructions support in float32 and float64, and why.

Decoder (all constructions): at z = k/V the right logit beats its neighbours by 1/V^2, and each logit
z (2k/V - 1) + 1/4 - k^2/V^2 is O(1) and carries a few units of roundoff u (u = 2^-24 float32, 2^-53 float64),
plus the roundoff of z itself (the table lookup computes (k/V + 1) - 1). Guaranteed when 1/V^2 >= 8u:
V <= 1448 (float32), V <= 3.3e7 (float64). `decoder_exact` checks every k for a given V through the model's own
MLP and head, so the true limit can be measured; it sits somewhat above the guarantee.

Length N (unconditional) and N0 (responses) are not limited by precision: a hard head with scores in {0, hard}
leaks at most n e^-hard to wrong keys, below roundoff for hard = 100 and any n < 1e20; they are limited by memory
(d_model = 2N + 1, so the weights grow as N^2).

Two-token packing: r_i holds V digits in base V + 1 in one scalar. Unpacking multiplies an error in r by
(V + 1) per digit and each floor ramp tolerates 1/(4V). The error is not only r's representation (u): each unpack
step's dot products over up to 3V + 1 terms add roundoff of their own, which later steps multiply as well. So it
needs 4 V (3V + 1) (V + 1)^V u < 1: V <= 5 (float32), V <= 11 (float64); tests check these on 200 random maps
each. Without the (3V + 1) the bound said 6 and 12, and float32 at V = 6 is not exact. Measured on 200 random
maps each (tests/test_theory_constructions.two_token_wrong_maps): float32 V = 5: 0 wrong, V = 6: 25, V = 7: 183;
float64 V = 11 and 12: 0, V = 13: 200.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


def max_vocab_decoder(dtype: str) -> int:
    """Largest V with 1/V^2 >= 8u (guaranteed exact decoding)."""
    return int(math.floor(1.0 / math.sqrt(8.0 * ROUNDOFF[dtype])))


def max_vocab_two_token(dtype: str) -> int:
    """Largest V with 4 V (3V + 1) (V + 1)^V u < 1 (guaranteed exact base-(V+1) unpacking)."""
    bound = lambda V: 4 * V * (3 * V + 1) * (V + 1) ** V * ROUNDOFF[dtype]
    V = 1
    while bound(V + 1) < 1:
        V += 1
    return V


def decoder_exact(V: int, dtype: str) -> bool:
    """Every token k in [V] decodes to k through the real MLP + LM head of `unconditional` (N = 1), fed the
    attention output (k/V, e_0, 0) that the hard heads produce."""
    from prefixlab.theory.constructions import unconditional

    model, _ = unconditional([0], V, dtype=dtype)
    dt = model.cfg.jnp_dtype
    k = np.arange(V)
    x = np.zeros((V, 1, model.cfg.d_model))
    x[:, 0, 0] = k / V
    x[:, 0, 1] = 1.0
    logits = model._logits(model.blocks[0].mlp(jnp.asarray(x, dt)))
    return bool((np.asarray(jnp.argmax(logits[:, 0], -1)) == k).all())


def measured_decoder_limit(dtype: str, candidates) -> dict:
    """Largest candidate V that decodes exactly, and the smallest that fails (None if none fails)."""
    ok = {int(V): decoder_exact(int(V), dtype) for V in candidates}
    passing = [V for V, g in ok.items() if g]
    failing = [V for V, g in ok.items() if not g]
    return {"largest_exact": max(passing) if passing else None, "smallest_failing": min(failing) if failing else None,
            "guaranteed": max_vocab_decoder(dtype)}
