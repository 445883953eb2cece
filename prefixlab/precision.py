"""Mixed-precision matmuls: bf16 operands, f32 accumulation, f32 result, f32 parameters.

`matmul(x, w, compute_dtype)` is `x @ w` when the compute dtype is the operands' own. Otherwise it casts both
operands, multiplies with f32 accumulation, and returns f32, so everything between matmuls (LayerNorm statistics,
softmax, residual stream, loss) and the gradients that reach the parameters stay f32.

Its backward pass is written out (a custom VJP) because of how XLA on CPU runs bf16: only a dot that contracts the
lhs's last axis with the rhs's first axis goes to the fast bf16 kernel (XNNPACK, about 2x f32 on AVX-512 BF16).
Autodiff's dx = g w^T and dW = x^T g contract other axes, and XLA upcasts those to f32 instead. So the backward
transposes w and x in memory first. A plain 2-D transpose is folded back into the dot by XLA's simplifier; a
transpose of a 3-D view is not (`_transposed`). scripts/bench.py measures what this buys.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "float64", "bfloat16")


def _dot(a_MK, b_KN):
    return jnp.matmul(a_MK, b_KN, preferred_element_type=jnp.float32)


def _transposed(a_MK):
    """a^T as a new row-major array (see the module docstring for why not `a.T`)."""
    return jnp.swapaxes(a_MK[None], 1, 2)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _low_matmul(x_MK, w_KN, dtype):
    return _dot(x_MK.astype(dtype), w_KN.astype(dtype))


def _low_fwd(x_MK, w_KN, dtype):
    x_low, w_low = x_MK.astype(dtype), w_KN.astype(dtype)
    return _dot(x_low, w_low), (x_low, w_low)


def _low_bwd(dtype, res, g_MN):
    """f32 cotangents (a low compute dtype is only offered for f32 models, config.py)."""
    x_low, w_low = res
    g_low = g_MN.astype(dtype)
    return _dot(g_low, _transposed(w_low)), _dot(_transposed(x_low), g_low)


_low_matmul.defvjp(_low_fwd, _low_bwd)


def matmul(x, w_KN, compute_dtype):
    """x (..., K) @ w (K, N) -> (..., N), with the operands in `compute_dtype` and the result in f32 (or `x @ w`
    unchanged when that is the operands' dtype)."""
    if jnp.dtype(compute_dtype) == w_KN.dtype:
        return x @ w_KN
    lead = x.shape[:-1]
    y_MN = _low_matmul(x.reshape(-1, x.shape[-1]), w_KN, jnp.dtype(compute_dtype))
    return y_MN.reshape(*lead, w_KN.shape[1])
