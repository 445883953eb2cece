"""Petrov et al.'s constructions (section 3) as weights of the project's Transformer, with virtual tokens as a
`Context`. Every model runs through `Transformer.__call__` / `greedy_generate` unchanged.

Common decoder: the last MLP writes a scalar z to stream coordinate 0 and the LM head (with bias, final LN off)
computes logit_k(z) = (z - 1/2)^2 - (z - k/V)^2 = z (2k/V - 1) + 1/4 - k^2/V^2, linear in z; token k wins iff
z is closest to k/V. At z = k/V the winning logit beats its neighbours by exactly 1/V^2, so the vocabulary is
limited by the floating-point rounding of the logits (see `limits`):  1/V^2 must exceed a few units of roundoff.

Softmax attention is never exactly hard: each "hard" head has scores in {0, 1} times `hard` (the attention scale),
so the wrong keys get weight <= n e^-hard relative, below float64 roundoff for hard = 100; exactness is checked
on the decoded tokens, not assumed.

Virtual tokens carry no position embedding in prefixlab, so when a head must find virtual token p it matches a
one-hot index stored in that virtual token's own vector (a choice of the construction, not an extra input).
"""

from __future__ import annotations

import numpy as np

from prefixlab.config import ModelConfig
from prefixlab.model import Context
from prefixlab.theory.weights import LayerWeights, build_model

HARD = 100.0
Z = 0  # stream coordinate of the decoded scalar


def _cfg(V, block, d, H, K, hidden, n_layer=1, dtype="float64", hard=HARD):
    return ModelConfig(vocab_size=V, block_size=block, n_layer=n_layer, n_head=H, d_model=d, head_dim=K,
                       mlp_hidden=hidden, activation="relu", ln_attn=False, ln_mlp=False, ln_final=False,
                       residual_attn=False, residual_mlp=False, attn_scale=hard, causal=True, pos_emb=True,
                       head_bias=True, dropout=0.0, dtype=dtype)


def decoder_head(d: int, V: int):
    """LM head (kernel d x V, bias V) implementing logit_k(z) = z (2k/V - 1) + 1/4 - k^2/V^2 on coordinate Z."""
    k = np.arange(V)
    W = np.zeros((d, V))
    W[Z] = 2.0 * k / V - 1.0
    return W, 0.25 - (k / V) ** 2


def _lookup_net(d_in, table, onehot, V, extra=()):
    """ReLU(table_x + onehot_x - 1) keeps only entry x of a table with values in [0, 1); a sum reads it out.
    Three layers: select (V units, plus carried coordinates `extra`), sum, write to Z."""
    n_extra = len(extra)
    W1, b1 = np.zeros((d_in, V + n_extra)), np.zeros(V + n_extra)
    W1[table + np.arange(V), np.arange(V)] = 1.0
    W1[onehot + np.arange(V), np.arange(V)] = 1.0
    b1[:V] = -1.0
    for i, (src, _) in enumerate(extra):
        W1[src, V + i] = 1.0
    return W1, b1


def unconditional(targets, vocab_size: int, dtype: str = "float64", hard: float = HARD):
    """Theorem 1: one layer, two heads, three-layer ReLU MLP; d = N (virtual content) + N (positional one-hots)
    + 1 (virtual flag). Virtual token = (Y_j / V)_j. Generate with `greedy_generate(model, zeros (B,1), N, ctx)`:
    content position p (the start token, then the generated ones) predicts targets[p].
    Returns (model, ctx)."""
    Y = np.asarray(targets, np.int64)
    N, V = len(Y), vocab_size
    if N < 1 or Y.min() < 0 or Y.max() >= V:
        raise ValueError(f"targets must be a non-empty sequence of ints in [0, {V})")
    C, POS, F = 0, N, 2 * N
    cfg = _cfg(V, N, 2 * N + 1, 2, N, (N, 1), dtype=dtype, hard=hard)
    lw = LayerWeights(cfg)
    p = np.arange(N)
    # head 0: position p attends to itself (positional one-hot match), returns e_p
    lw.q_w[POS + p, lw.col(0, p)] = 1.0
    lw.k_w[POS + p, lw.col(0, p)] = 1.0
    lw.v_w[POS + p, lw.col(0, p)] = 1.0
    lw.o_w[lw.col(0, p), POS + p] = 1.0
    # head 1: constant query, key = virtual flag: everyone attends to the virtual token and copies its content
    lw.q_b[lw.col(1, 0)] = 1.0
    lw.k_w[F, lw.col(1, 0)] = 1.0
    lw.v_w[C + p, lw.col(1, p)] = 1.0
    lw.o_w[lw.col(1, p), C + p] = 1.0
    W1, b1 = _lookup_net(cfg.d_model, C, POS, N)
    net = [(W1, b1), (np.ones((N, 1)), np.zeros(1)), (np.eye(1, cfg.d_model, Z), np.zeros(cfg.d_model))]
    pos = np.zeros((N, cfg.d_model))
    pos[p, POS + p] = 1.0
    hw, hb = decoder_head(cfg.d_model, V)
    model = build_model(cfg, attn=[lw], mlps=[net], pos_emb=pos, head_w=hw, head_b=hb)
    virt = np.zeros((1, cfg.d_model))
    virt[0, C + p] = Y / V
    virt[0, F] = 1.0
    return model, _ctx(virt, cfg)


def _ctx(virt_PD, cfg):
    import jax.numpy as jnp

    return Context(jnp.ones((virt_PD.shape[0],), bool), embeds_PD=jnp.asarray(virt_PD, cfg.jnp_dtype))


def responses(mapping_to_sequences, vocab_size: int, dtype: str = "float64", hard: float = HARD):
    """N0 virtual tokens: input token x answers with the sequence mapping_to_sequences[x] (length N0).
    Virtual token p holds the table (m_p(x) / V)_x and a one-hot index p. Head 0 copies the FIRST input token's
    one-hot (from content position 0), head 1 attends from content position p to virtual token p; the MLP reads
    the table at x. Generate with `greedy_generate(model, x (B,1), N0, ctx)`. Returns (model, ctx)."""
    M = np.asarray(mapping_to_sequences, np.int64)
    V = vocab_size
    if M.ndim != 2 or M.shape[0] != V or M.min() < 0 or M.max() >= V:
        raise ValueError(f"mapping must have shape ({V}, N0) with values in [0, {V})")
    N0 = M.shape[1]
    T, O, POS, IDX = 0, V, 2 * V, 2 * V + N0
    K = max(V, N0)
    cfg = _cfg(V, N0, 2 * V + 2 * N0, 2, K, (V, 1), dtype=dtype, hard=hard)
    lw = LayerWeights(cfg)
    x, p = np.arange(V), np.arange(N0)
    # head 0: constant query, key = "content position 0": copies the first token's one-hot
    lw.q_b[lw.col(0, 0)] = 1.0
    lw.k_w[POS + 0, lw.col(0, 0)] = 1.0
    lw.v_w[O + x, lw.col(0, x)] = 1.0
    lw.o_w[lw.col(0, x), O + x] = 1.0
    # head 1: content position p matches virtual index p, copies that virtual token's table
    lw.q_w[POS + p, lw.col(1, p)] = 1.0
    lw.k_w[IDX + p, lw.col(1, p)] = 1.0
    lw.v_w[T + x, lw.col(1, x)] = 1.0
    lw.o_w[lw.col(1, x), T + x] = 1.0
    W1, b1 = _lookup_net(cfg.d_model, T, O, V)
    net = [(W1, b1), (np.ones((V, 1)), np.zeros(1)), (np.eye(1, cfg.d_model, Z), np.zeros(cfg.d_model))]
    tok = np.zeros((V, cfg.d_model))
    tok[x, O + x] = 1.0
    pos = np.zeros((N0, cfg.d_model))
    pos[p, POS + p] = 1.0
    hw, hb = decoder_head(cfg.d_model, V)
    model = build_model(cfg, attn=[lw], mlps=[net], tok_emb=tok, pos_emb=pos, head_w=hw, head_b=hb)
    virt = np.zeros((N0, cfg.d_model))
    virt[p[:, None], T + x[None, :]] = M.T / V
    virt[p, IDX + p] = 1.0
    return model, _ctx(virt, cfg)


def conditional(mapping, vocab_size: int, dtype: str = "float64", hard: float = HARD):
    """Theorem 2: one virtual token (the table (m(x) / V)_x) maps any input token x to mapping[x].
    Generate with `greedy_generate(model, x (B,1), 1, ctx)`. Returns (model, ctx)."""
    m = np.asarray(mapping, np.int64)
    return responses(m[:, None], vocab_size, dtype, hard)


# -- two-token conditioning ------------------------------------------------------------------------------------

def _unpack_net(d, R, OH, V, out_scale):
    """ReLU net: digit j (one-hot at OH) of r (at R) in base B = V + 1, r = sum_j m_j / B^(j+1), m_j in [0, V).

    Base V + 1 (not V) keeps every remainder in [0, 1 - 1/V], so floor() is a ReLU ramp of slope 2V placed
    between 1 - 3/(4V) and 1 - 1/(4V): digits come out exact while the error of u stays below 1/(4V).
    Stage t: u_t = B r_(t-1); digit_t = sum_k ramp(u_t - k); r_t = u_t - digit_t. Selection of digit j:
    ReLU(digit_t - V (1 - onehot_j)) is digit_t if j = t - 1 else 0. Hidden layers: V + 1, width 3V + 1."""
    B = V + 1
    U = 2 * (V - 1)
    OHh, SEL, ACC = U + 1, U + 1 + V, U + 2 + V
    W_h = ACC + 1
    steps_a = 2 * np.arange(V - 1)
    steps_b = steps_a + 1
    ks = np.arange(1, V)

    def stage(in_dim, u_coef, digit_coef_src, oh_src, sel_oh, acc_src, with_steps):
        """Pre-activations of one hidden layer from linear forms over the previous layer's units."""
        W, b = np.zeros((in_dim, W_h)), np.zeros(W_h)
        if with_steps:  # ramp(t) = ReLU(2V t + 1.5) - ReLU(2V t + 0.5), t = u - k
            for a_i, b_i, k in zip(steps_a, steps_b, ks):
                W[:, a_i] = 2 * V * u_coef
                W[:, b_i] = 2 * V * u_coef
                b[a_i], b[b_i] = -2 * V * k + 1.5, -2 * V * k + 0.5
            W[:, U] = u_coef
        for i in range(V):
            W[oh_src[i], OHh + i] = 1.0
        if digit_coef_src is not None:
            W[:, SEL] = digit_coef_src
            W[oh_src[sel_oh], SEL] += V
            b[SEL] = -V
        if acc_src is not None:
            W[acc_src, ACC] = 1.0
        return W, b

    def digit_coef():  # digit_t as a linear form over a hidden layer's units
        c = np.zeros(W_h)
        c[steps_a], c[steps_b] = 1.0, -1.0
        return c

    layers = []
    u0 = np.zeros(d)
    u0[R] = B
    layers.append(stage(d, u0, None, OH + np.arange(V), None, None, True))
    oh_h = OHh + np.arange(V)
    for t in range(1, V + 1):  # layer t+1 reads stage t's units
        u_next = B * (np.eye(W_h)[U] - digit_coef())
        acc_src = [ACC, SEL] if t > 1 else []
        layers.append(stage(W_h, u_next, digit_coef(), oh_h, t - 1, acc_src, t < V))
    Wout = np.zeros((W_h, d))
    Wout[ACC, Z] = Wout[SEL, Z] = out_scale
    layers.append((Wout, np.zeros(d)))
    return layers


def two_token(mapping_of_pairs, vocab_size: int, dtype: str = "float64", hard: float = HARD):
    """Two layers, conditioning on two input tokens (i, j) -> mapping[i, j].

    One virtual token packs, for every first token i, the map j -> m(i, j) as one fraction
    r_i = sum_j m(i, j) / (V+1)^(j+1) (base V+1, see `_unpack_net`). Layer 1: head 0 copies the first token's
    one-hot, head 1 the virtual table, head 2 the current token's one-hot and position; its MLP looks up r_i.
    Layer 2: one head passes (r_i, one-hot j) on; its deep ReLU MLP unpacks digit j of r_i and writes m(i, j)/V
    for the decoder. The unpacking is done by network layers only. Generate with
    `greedy_generate(model, pairs (B,2), 1, ctx)`. Returns (model, ctx)."""
    M = np.asarray(mapping_of_pairs, np.int64)
    V = vocab_size
    if M.shape != (V, V) or M.min() < 0 or M.max() >= V:
        raise ValueError(f"mapping must have shape ({V}, {V}) with values in [0, {V})")
    d = 3 * V + 2
    hidden = (3 * V + 1,) * (V + 1)
    cfg = _cfg(V, 2, d, 3, V + 2, hidden, n_layer=2, dtype=dtype, hard=hard)
    x = np.arange(V)
    # layer-1 input: table T, token one-hot O, position one-hot POS (2), virtual flag F
    T, O, POS, F = 0, V, 2 * V, 2 * V + 2
    # layer-1 attention output: first one-hot A0, table A1, current one-hot A2, position A3
    A0, A1, A2, A3 = 0, V, 2 * V, 3 * V
    l1 = LayerWeights(cfg)
    l1.q_b[l1.col(0, 0)] = 1.0
    l1.k_w[POS, l1.col(0, 0)] = 1.0
    l1.v_w[O + x, l1.col(0, x)] = 1.0
    l1.o_w[l1.col(0, x), A0 + x] = 1.0
    l1.q_b[l1.col(1, 0)] = 1.0
    l1.k_w[F, l1.col(1, 0)] = 1.0
    l1.v_w[T + x, l1.col(1, x)] = 1.0
    l1.o_w[l1.col(1, x), A1 + x] = 1.0
    for p in range(2):
        l1.q_w[POS + p, l1.col(2, p)] = 1.0
        l1.k_w[POS + p, l1.col(2, p)] = 1.0
        l1.v_w[POS + p, l1.col(2, V + p)] = 1.0
        l1.o_w[l1.col(2, V + p), A3 + p] = 1.0
    l1.v_w[O + x, l1.col(2, x)] = 1.0
    l1.o_w[l1.col(2, x), A2 + x] = 1.0
    # MLP 1: r_i -> coordinate R; carry current one-hot -> OH2 and position -> POS2
    R, OH2, POS2 = 0, 1, V + 1
    W1, b1 = _lookup_net(d, A1, A0, V, extra=[(A2 + i, 0) for i in range(V)] + [(A3 + p, 0) for p in range(2)])
    W2 = np.zeros((V + V + 2, d))
    W2[np.arange(V), R] = 1.0
    W2[V + x, OH2 + x] = 1.0
    W2[2 * V + np.arange(2), POS2 + np.arange(2)] = 1.0
    mlp1 = [(W1, b1), (W2, np.zeros(d))]
    # layer 2: attend to self by position, pass (r, one-hot) through unchanged
    l2 = LayerWeights(cfg)
    for p in range(2):
        l2.q_w[POS2 + p, l2.col(0, p)] = 1.0
        l2.k_w[POS2 + p, l2.col(0, p)] = 1.0
    c = np.arange(V + 1)
    l2.v_w[R + c, l2.col(0, c)] = 1.0
    l2.o_w[l2.col(0, c), R + c] = 1.0
    mlp2 = _unpack_net(d, R, OH2, V, 1.0 / V)
    tok = np.zeros((V, d))
    tok[x, O + x] = 1.0
    pos = np.zeros((2, d))
    pos[[0, 1], [POS, POS + 1]] = 1.0
    hw, hb = decoder_head(d, V)
    model = build_model(cfg, attn=[l1, l2], mlps=[mlp1, mlp2], tok_emb=tok, pos_emb=pos, head_w=hw, head_b=hb)
    virt = np.zeros((1, d))
    virt[0, T + x] = pack_base(M, V + 1)
    virt[0, F] = 1.0
    return model, _ctx(virt, cfg)


def pack_base(M, base):
    """r_i = sum_j M[i, j] / base^(j+1), computed in float64 by Horner's rule from the last digit."""
    r = np.zeros(M.shape[0])
    for j in reversed(range(M.shape[1])):
        r = (r + M[:, j]) / base
    return r
