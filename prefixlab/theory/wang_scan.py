"""Wang et al.: parameters-vs-examples scan (E3) and the multi-layer "two inputs, same output" limit (E4).

Both use the project's Transformer in the same Yun-style configuration as `wang.py` (no LayerNorm, residual
attention with one full-width head, residual ReLU MLP, no position embedding, float64), but with single-token
inputs X_i = [x_i] scored at their own position, CAUSAL attention (the prompt precedes the input, so for a
fixed prompt its per-layer states are constants and each layer is a map of the input token alone).

E3, `param_scan`: K examples x_1..x_K (distinct tokens). Two target sets:
  * "reachable": y_i = the model's output at x_i under a hidden random prompt of K tokens. These are generic
    points of what prompts can produce, so only the counting argument limits the prompt: m_p·d parameters for
    K·d equations, m_p >= K needed; a length-K prompt exists by construction.
  * "random": y_i = f(z_i), z_i ~ N(0, 2^2) (in the MLP's range, as in `wang.make_problem`): generic targets
    that a prompt also has to reach through the key-value-coupled attention.
  For each K: the smallest prompt length with MSE < 1e-8 (L-BFGS, restarts) and the smallest rank of a LoRA on
  W_2 (`proj`) with MSE < 1e-8. Trainable parameters: prompt m_p·d; LoRA rank·(r + d) (A: r x rank, B: rank x d).
  LoRA on W_2 needs rank >= rank of the residual (min(K, d) generically) and fits whenever the K hidden ReLU
  rows are independent (K <= r), so prompt > LoRA in parameters needs K·d > min(K, d)(r + d), i.e. K > r + d,
  which is outside K <= r: within the range where LoRA on W_2 can fit at all, the counts never cross.

E4, `two_inputs`: 2 layers, inputs x_1 != x_2, both with the SAME target y (the output at x_1 under a hidden
2-token prompt, so x_1 alone is reachable). Invertibility conditions, per layer l:
  * MLP contraction: ||W1|| ||W2|| = L < 1, so f_l is (1 - L)-lower-Lipschitz;
  * attention: W_q = 0 (scores do not depend on the query, so with zero biases attention is uniform over the
    m_p valid prompt slots and the token itself) and a = ||W_v W_o|| < 1. For a fixed prompt the attention
    residual at the input is h -> h + (h W_v W_o + sum_j p_j^l W_v W_o)/(m_p + 1): affine and
    (1 - a)-lower-Lipschitz for EVERY prompt (with a general W_q no weight condition bounds this for all
    prompts: the prompt's values enter the Jacobian through the softmax).
  Then ||out_1 - out_2|| >= kappa ||x_1 - x_2||, kappa = prod_l (1 - a_l)(1 - L_l), for any prompt of any
  length, and MSE = (||out_1 - y||^2 + ||out_2 - y||^2) / (2d) >= kappa^2 ||x_1 - x_2||^2 / (4d): a certificate.
  Weight updates (LoRA rank 2 on W_2 of both layers, full fine-tuning) can merge the two inputs.
  Control ("collapse"): the same model with layer 1's MLP replaced by f(h) = h - ReLU(h W1) W2' with
  W1 = 3R, W2' = R^T / 3 (R orthogonal; ||W1|| ||W2|| = 1, not a contraction), i.e. f(h) = min(h R, 0) R^T + b2,
  which maps a whole cone to one point: a prompt that shifts both inputs into it makes them indistinguishable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.methods.lora import LoRA, LoRAParam
from prefixlab.model import Context, Transformer
from prefixlab.theory.lbfgs import lbfgs_min, make_lbfgs
from prefixlab.theory.wang import mlp_forward, write_block

FIT = 1e-8


@dataclasses.dataclass
class Stack:
    """Weights of an n-layer Yun-style model (numpy): per layer wq wk wv wo (d x d), w1 (d x r), b1, w2, b2."""
    layers: list
    tok: np.ndarray  # vocab x d
    r: int

    @property
    def d(self):
        return self.tok.shape[1]

    def model(self) -> Transformer:
        cfg = ModelConfig(vocab_size=self.tok.shape[0], block_size=1, n_layer=len(self.layers), n_head=1,
                          d_model=self.d, head_dim=self.d, mlp_hidden=(self.r,), activation="relu", ln_attn=False,
                          ln_mlp=False, ln_final=False, residual_attn=True, residual_mlp=True, pos_emb=False,
                          causal=True, dropout=0.0, dtype="float64")
        m = Transformer(cfg, rngs=nnx.Rngs(0))
        m.tok_emb[...] = jnp.asarray(self.tok)
        for blk, w in zip(m.blocks, self.layers):
            write_block(blk, w)
        return m


def _layer(g, d, r, L, attn_norm=None):
    """Random layer with ||W1|| ||W2|| = L; attn_norm: W_q = 0 and ||W_v W_o|| = attn_norm."""
    w = {k: g.normal(size=(d, d)) / np.sqrt(d) for k in ("wq", "wk", "wv", "wo")}
    if attn_norm is not None:
        w["wq"] = np.zeros((d, d))
        s = np.sqrt(attn_norm / np.linalg.norm(w["wv"] @ w["wo"], 2))
        w["wv"], w["wo"] = w["wv"] * s, w["wo"] * s
    w1, w2 = g.normal(size=(d, r)), g.normal(size=(r, d))
    s = np.sqrt(L / (np.linalg.norm(w1, 2) * np.linalg.norm(w2, 2)))
    w.update(w1=w1 * s, w2=w2 * s, b1=g.normal(size=r) * 0.5, b2=g.normal(size=d) * 0.5)
    return w


def outputs(model, tokens_IT, ctx=None):
    """Final stream at the (single) content position of each example."""
    x, _, P = model.stream(jnp.asarray(tokens_IT), ctx)
    return x[:, P]


def _mse(a, b):
    return jnp.mean(jnp.square(a - b))


def hidden_prompt_outputs(st: Stack, tokens_IT, m_p: int, seed: int):
    prompt = jax.random.normal(jax.random.key(seed), (m_p, st.d), jnp.float64)
    return outputs(st.model(), tokens_IT, Context(jnp.ones((m_p,), bool), embeds_PD=prompt))


PROMPT_BOUND = 1e4


def bound_prompt(raw_PD):
    """Prompt entries PROMPT_BOUND * tanh(raw / PROMPT_BOUND): |entries| < 1e4. Unbounded prompts let the line
    search step to overflowing scores, where optax's L-BFGS was seen to hang."""
    return PROMPT_BOUND * jnp.tanh(raw_PD / PROMPT_BOUND)


def prompt_fitter(st: Stack, tokens_IT, pad_to: int, steps: int):
    """fn(init_RPD, valid_P, y_ID) -> best MSE; one compiled program for every length and target set."""
    graphdef, state = nnx.split(st.model())

    def loss(prompt_PD, aux):
        valid, y = aux
        v = _mse(outputs(nnx.merge(graphdef, state), tokens_IT, Context(valid, embeds_PD=bound_prompt(prompt_PD)),), y)
        return jnp.where(jnp.isfinite(v), v, 1e30)

    run = make_lbfgs(loss, steps)
    return lambda init, valid, y: float(run(init, (valid, y))[0].min())


def fit_prompt_lengths(st: Stack, tokens_IT, y, lengths, restarts=8, steps=300, seed=0, fitter=None):
    Pmax = max(lengths)
    fitter = fitter or prompt_fitter(st, tokens_IT, Pmax, steps)
    out = {}
    for m_p in lengths:
        init = jax.random.normal(jax.random.key(seed + 100 * m_p), (restarts, Pmax, st.d), jnp.float64)
        out[int(m_p)] = fitter(init, jnp.arange(Pmax) < m_p, jnp.asarray(y))
    return out


def fit_lora_ranks(st: Stack, tokens_IT, y, ranks, targets=("proj",), restarts=4, steps=300, seed=0):
    """Best MSE of LoRA of each rank in `ranks` on `targets` (every layer), base frozen. One compiled program:
    a rank-max(ranks) LoRA (alpha = rank, scale 1) whose factor columns beyond the rank are masked to zero."""
    R = max(ranks)
    lora = LoRA(rank=R, alpha=float(R), targets=tuple(targets))
    graphdef, lora_state, rest = nnx.split(lora.adapt(st.model(), jax.random.key(0)), LoRAParam, ...)
    y = jnp.asarray(y)

    def masked(p, k):
        keep = (jnp.arange(R) < k)[None, :]  # zero A's columns beyond the rank: rank(A B) <= k
        return jax.tree_util.tree_map_with_path(lambda path, x: x * keep if "lora_a" in str(path) else x, p)

    def loss(p, k):
        return _mse(outputs(nnx.merge(graphdef, masked(p, k), rest), tokens_IT), y)

    run = make_lbfgs(loss, steps)
    keys = jax.random.split(jax.random.key(seed), restarts)
    init = jax.vmap(lambda k: jax.tree.map(lambda x: jax.random.normal(k, x.shape, x.dtype) * 0.5, lora_state))(keys)
    return {int(k): float(run(init, jnp.asarray(k))[0].min()) for k in ranks}


def fit_full(st: Stack, tokens_IT, y, steps=300) -> float:
    """Full fine-tuning (every weight, token embeddings included) from the base weights."""
    graphdef, params = nnx.split(st.model())
    y = jnp.asarray(y)
    loss = lambda p: _mse(outputs(nnx.merge(graphdef, p), tokens_IT), y)
    return lbfgs_min(loss, jax.tree.map(lambda x: x[None], params), steps)[0]


def _first_fit(mses: dict):
    ok = [k for k, v in sorted(mses.items()) if v < FIT]
    return ok[0] if ok else None


# -- E3: parameters vs examples ----------------------------------------------------------------------------

def param_scan(d=2, r=8, Ks=(1, 2, 3, 4, 5, 6), max_len=8, seed=0, restarts=8, steps=300) -> list[dict]:
    """Per K: smallest fitting prompt length / LoRA rank (None = not fit within the scanned range), the best
    MSE per length / rank, and the trainable-parameter counts, for the reachable and the random target sets."""
    rows = []
    for K in Ks:
        g = np.random.default_rng(seed + 1000 * K)
        st = Stack([_layer(g, d, r, 0.5)], g.normal(size=(K, d)), r)
        tokens = np.arange(K)[:, None]
        targets = {"reachable": np.asarray(hidden_prompt_outputs(st, tokens, K, seed + K)),
                   "random": np.asarray(mlp_forward(st.layers[0], g.normal(size=(K, d)) * 2.0))}
        fitter = prompt_fitter(st, tokens, max_len, steps)
        for name, y in targets.items():
            pm = fit_prompt_lengths(st, tokens, y, range(1, max_len + 1), restarts, steps, seed, fitter)
            lm = fit_lora_ranks(st, tokens, y, range(1, d + 1), restarts=max(4, restarts // 2), steps=steps, seed=seed)
            mp, rk = _first_fit(pm), _first_fit(lm)
            rows.append({"K": K, "targets": name, "d": d, "r": r, "prompt_mse": pm, "lora_mse": lm,
                         "min_prompt_len": mp, "min_lora_rank": rk,
                         "prompt_params": None if mp is None else mp * d,
                         "lora_params": None if rk is None else rk * (r + d)})
    return rows


# -- E4: two inputs, same output ---------------------------------------------------------------------------

def two_input_problem(d=3, r=8, seed=0, L=0.5, attn_norm=0.5, collapse=False) -> Stack:
    """2 layers satisfying the invertibility conditions; collapse=True replaces layer 1's MLP by the
    non-contractive cone collapse f(h) = min(hR, 0) R^T + b2 (see the module docstring)."""
    g = np.random.default_rng(seed)
    layers = [_layer(g, d, r, L, attn_norm) for _ in range(2)]
    tok = g.normal(size=(3, d))
    if collapse:
        R = np.linalg.qr(g.normal(size=(d, d)))[0]
        w1, w2 = np.zeros((d, r)), np.zeros((r, d))
        w1[:, :d], w2[:d] = 3.0 * R, -R.T / 3.0
        layers[0].update(w1=w1, w2=w2, b1=np.zeros(r))
    return Stack(layers, tok, r)


def two_input_certificate(st: Stack) -> dict:
    """Lower bound kappa^2 ||x_1 - x_2||^2 / (4d) on the MSE of any prompt (valid when every kappa factor > 0)."""
    kappa, Ls, As = 1.0, [], []
    for w in st.layers:
        Lw = np.linalg.norm(w["w1"], 2) * np.linalg.norm(w["w2"], 2)
        a = np.linalg.norm(w["wv"] @ w["wo"], 2) if not np.any(w["wq"]) else np.inf
        Ls.append(float(Lw)), As.append(float(a))
        kappa *= max(0.0, 1 - Lw) * max(0.0, 1 - a)
    delta = np.linalg.norm(st.tok[1] - st.tok[2])
    return {"bound": float(kappa**2 * delta**2 / (4 * st.d)), "kappa": float(kappa), "L": Ls, "attn": As}


def two_inputs(d=3, r=8, seed=0, lengths=(1, 2, 4, 8), restarts=8, steps=300, collapse=False) -> dict:
    st = two_input_problem(d, r, seed, collapse=collapse)
    tokens = np.array([[1], [2]])
    y1 = np.asarray(hidden_prompt_outputs(st, tokens[:1], 2, seed + 7))
    y = np.repeat(y1, 2, 0)
    pm = fit_prompt_lengths(st, tokens, y, lengths, restarts, steps, seed)
    single = fit_prompt_lengths(st, tokens[:1], y1, [2], restarts, steps, seed)[2]
    out = {"collapse": collapse, "d": d, "r": r, "prompt_mse": pm, "best_prompt": min(pm.values()),
           "x1_alone_len2": single, "cert": two_input_certificate(st)}
    if not collapse:
        out["lora2_proj"] = fit_lora_ranks(st, tokens, y, [2], restarts=4, steps=steps, seed=seed)[2]
        out["full"] = fit_full(st, tokens, y, steps)
    return out
