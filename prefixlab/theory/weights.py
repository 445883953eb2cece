"""Writing hand-built numpy weights into the project's Transformer (every unset parameter is zero)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.model import Transformer


class LayerWeights:
    """Zero-initialised attention weights of one layer, in the model's layout (head h = columns h*K:(h+1)*K)."""

    def __init__(self, cfg: ModelConfig):
        D, HK = cfg.d_model, cfg.n_head * cfg.hd
        self.K = cfg.hd
        self.q_w, self.k_w, self.v_w = (np.zeros((D, HK)) for _ in range(3))
        self.q_b, self.k_b, self.v_b = (np.zeros(HK) for _ in range(3))
        self.o_w, self.o_b = np.zeros((HK, D)), np.zeros(D)

    def col(self, head: int, i: int) -> int:
        return head * self.K + i


def fit_relu_net(layers, widths):
    """Embed a ReLU net [(W, b), ...] (ReLU between layers, none after the last; all hidden values >= 0) into
    the model's MLP widths: identity layers are inserted before the last (ReLU(h) = h for h >= 0) and every
    matrix is zero-padded."""
    n = len(widths) - 1
    if len(layers) > n:
        raise ValueError(f"net has {len(layers)} layers, the model's MLP only {n}")
    if len(layers) < n:
        h = layers[-1][0].shape[0]
        layers = layers[:-1] + [(np.eye(h), np.zeros(h))] * (n - len(layers)) + layers[-1:]
    out = []
    for i, (W, b) in enumerate(layers):
        Wp, bp = np.zeros((widths[i], widths[i + 1])), np.zeros(widths[i + 1])
        Wp[: W.shape[0], : W.shape[1]] = W
        bp[: b.shape[0]] = b
        out.append((Wp, bp))
    return out


def build_model(cfg: ModelConfig, *, attn, mlps, tok_emb=None, pos_emb=None, head_w=None, head_b=None):
    """A Transformer whose parameters are exactly the given arrays (cast to cfg.dtype), zero elsewhere."""
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    dt = cfg.jnp_dtype
    state = nnx.state(model, nnx.Param)
    nnx.update(model, __import__("jax").tree.map(jnp.zeros_like, state))

    def put(param, arr):
        if arr is not None:
            param[...] = jnp.asarray(np.asarray(arr, np.float64), dt).reshape(param[...].shape)

    put(model.tok_emb, tok_emb)
    if model.pos_emb is not None:
        put(model.pos_emb, pos_emb)
    widths = (cfg.d_model, *cfg.hidden, cfg.d_model)
    for block, lw, net in zip(model.blocks, attn, mlps):
        a = block.attn
        for lin, w, b in ((a.q, lw.q_w, lw.q_b), (a.k, lw.k_w, lw.k_b), (a.v, lw.v_w, lw.v_b), (a.o, lw.o_w, lw.o_b)):
            put(lin.kernel, w)
            put(lin.bias, b)
        for lin, (w, b) in zip(block.mlp.layers, fit_relu_net(net, widths)):
            put(lin.kernel, w)
            put(lin.bias, b)
    put(model.head.kernel, head_w)
    if model.head.bias is not None:
        put(model.head.bias, head_b)
    return model
