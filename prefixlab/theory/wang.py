"""Wang et al.'s limitation of prompt tuning, on the project's Transformer (one block, float64).

Block (Yun et al. style): no LayerNorm, residual attention, one full-width head (head_dim = d), residual ReLU MLP
f(h) = h + ReLU(h W1 + b1) W2 + b2 with ||W1|| ||W2|| = L < 1, so f is invertible (inverse by fixed-point
iteration, `mlp_inverse`). Inputs are continuous vectors: the vocabulary is {x_0, x_1, ..., x_K} (tok_emb rows),
no position embedding, bidirectional attention. Dataset: X_i = [x_i, x_0], scored at the shared x_0 only.

Mechanism: at the query x_0 a prompt acts only through (A_P, S_P), d + 1 numbers shared by all examples:
  out_i = f(x_0 + lam_i A_i + (1 - lam_i) A_P),  lam_i = S_i / (S_i + S_P),
with A_i, S_i the attention output and exp-score sum over X_i alone. Certificate: f is bi-Lipschitz
(||f(u) - f(v)|| >= (1 - L) ||u - v||), so for every prompt of every length
  MSE >= (1 - L)^2 min_{s >= 0} min_a sum_i ||(1 - lam_i(s)) a - (f^-1(y_i) - x_0 - lam_i(s) A_i)||^2 / (n d),
where the inner minimum is least squares in closed form and the outer one a 1-D search over s (dense log grid
plus s = 0 and s -> inf). `relaxed_optimum` also optimises the d + 1 numbers directly through the real f: if the
prompt search reaches it, the optimiser is not what fails.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.model import Context, Transformer
from prefixlab.theory.lbfgs import lbfgs_min, make_lbfgs


@dataclasses.dataclass
class WangProblem:
    d: int
    r: int
    L: float  # ||W1|| ||W2||
    weights: dict  # numpy: wq wk wv wo (d x d), w1 (d x r), b1, w2 (r x d), b2, tok (K+1 x d)
    tokens_IT: np.ndarray  # example i = [i + 1, 0]
    targets_ID: np.ndarray  # target at x_0

    def cfg(self):
        return ModelConfig(vocab_size=self.weights["tok"].shape[0], block_size=2, n_layer=1, n_head=1, d_model=self.d,
                           head_dim=self.d, mlp_hidden=(self.r,), activation="relu", ln_attn=False, ln_mlp=False,
                           ln_final=False, residual_attn=True, residual_mlp=True, pos_emb=False, causal=False,
                           dropout=0.0, dtype="float64")

    def model(self) -> Transformer:
        m = Transformer(self.cfg(), rngs=nnx.Rngs(0))
        m.tok_emb[...] = jnp.asarray(self.weights["tok"])
        write_block(m.blocks[0], self.weights)
        return m


def write_block(block, w) -> None:
    """Writes a Yun-style block's weights (wq, wk, wv, wo without biases; w1, b1, w2, b2) into a model block."""
    a, mlp = block.attn, block.mlp
    for lin, k in ((a.q, "wq"), (a.k, "wk"), (a.v, "wv"), (a.o, "wo")):
        lin.kernel[...] = jnp.asarray(w[k])
        lin.bias[...] = jnp.zeros_like(lin.bias[...])
    mlp.layers[0].kernel[...], mlp.layers[0].bias[...] = jnp.asarray(w["w1"]), jnp.asarray(w["b1"])
    mlp.layers[1].kernel[...], mlp.layers[1].bias[...] = jnp.asarray(w["w2"]), jnp.asarray(w["b2"])


def make_problem(d: int, seed: int, r: int = 16, L: float = 0.5, n_examples: int = 2) -> WangProblem:
    """Random block with ||W1|| ||W2|| = L, tokens x_0..x_n ~ N(0, I), targets y_i = f(z_i) (in f's range)."""
    g = np.random.default_rng(seed)
    w = {k: g.normal(size=(d, d)) / np.sqrt(d) for k in ("wq", "wk", "wv", "wo")}
    w1, w2 = g.normal(size=(d, r)), g.normal(size=(r, d))
    s = np.sqrt(L / (np.linalg.norm(w1, 2) * np.linalg.norm(w2, 2)))
    w.update(w1=w1 * s, w2=w2 * s, b1=g.normal(size=r) * 0.5, b2=g.normal(size=d) * 0.5)
    w["tok"] = g.normal(size=(n_examples + 1, d))
    tokens = np.stack([np.arange(1, n_examples + 1), np.zeros(n_examples, int)], 1)
    z = g.normal(size=(n_examples, d)) * 2.0
    return WangProblem(d, r, float(np.linalg.norm(w["w1"], 2) * np.linalg.norm(w["w2"], 2)), w, tokens,
                       np.asarray(mlp_forward(w, z)))


def mlp_forward(w, h):
    return h + np.maximum(h @ w["w1"] + w["b1"], 0.0) @ w["w2"] + w["b2"]


def mlp_inverse(w, y, iters: int = 200):
    """f^-1(y) by the fixed point h = y - g(h); converges as L^iters since g is an L-contraction."""
    h = np.array(y, np.float64)
    for _ in range(iters):
        h = y - (np.maximum(h @ w["w1"] + w["b1"], 0.0) @ w["w2"] + w["b2"])
    return h


def _x0_outputs(model, tokens_IT, ctx):
    x, _, P = model.stream(jnp.asarray(tokens_IT), ctx)
    return x[:, P + 1]


def mse(out_ID, y_ID):
    return jnp.mean(jnp.square(out_ID - y_ID))


# -- fitting ---------------------------------------------------------------------------------------------------

def fit_prompt(prob: WangProblem, lengths, restarts: int = 8, steps: int = 400, seed: int = 0,
               targets=None, pad_to: int | None = None) -> dict:
    """Best MSE per prompt length by L-BFGS over input-layer soft prompts. One compiled program for all lengths:
    prompts are padded to `pad_to` slots and the unused ones masked (valid_P), which the model ignores."""
    model = prob.model()
    y = jnp.asarray(prob.targets_ID if targets is None else targets)
    Pmax = pad_to or max(lengths)
    graphdef, state = nnx.split(model)

    def loss(prompt_PD, valid_P):
        m = nnx.merge(graphdef, state)
        return mse(_x0_outputs(m, prob.tokens_IT, Context(valid_P, embeds_PD=prompt_PD)), y)

    run = make_lbfgs(loss, steps)
    out = {}
    for m_p in lengths:
        valid = jnp.arange(Pmax) < m_p
        init = jax.random.normal(jax.random.key(seed + m_p), (restarts, Pmax, prob.d), jnp.float64)
        out[int(m_p)] = float(run(init, valid)[0].min())
    return out


def scan_prompt_lengths(prob: WangProblem, first: int = 16, rel_tol: float = 1e-3, max_len: int = 128,
                        **fit) -> dict:
    """fit_prompt over m_p = 1..first, then doubling the length while the best MSE still falls by more than
    `rel_tol` (relative) and m_p <= max_len: the scan ends where longer prompts stop helping."""
    best = fit_prompt(prob, range(1, first + 1), **fit)
    m_p = first
    while 2 * m_p <= max_len:
        m_p *= 2
        before = min(best.values())
        best.update(fit_prompt(prob, [m_p], **fit))
        if best[m_p] >= before * (1 - rel_tol):
            break
    return best


def fit_lora(prob: WangProblem, rank: int, target: str = "proj", restarts: int = 4, steps: int = 400,
             seed: int = 0) -> float:
    """Best MSE of a rank-`rank` LoRA (alpha = rank, so scale 1) on one matrix; base frozen."""
    from prefixlab.methods.lora import LoRA, LoRAParam

    model = LoRA(rank=rank, alpha=float(rank), targets=(target,)).adapt(prob.model(), jax.random.key(0))
    graphdef, lora_state, rest = nnx.split(model, LoRAParam, ...)
    y = jnp.asarray(prob.targets_ID)

    def loss(p):
        return mse(_x0_outputs(nnx.merge(graphdef, p, rest), prob.tokens_IT, None), y)

    keys = jax.random.split(jax.random.key(seed), restarts)
    init = jax.vmap(lambda k: jax.tree.map(lambda x: jax.random.normal(k, x.shape, x.dtype) * 0.5, lora_state))(keys)
    return lbfgs_min(loss, init, steps)[0]


def fit_full(prob: WangProblem, steps: int = 400) -> float:
    """Best MSE of full fine-tuning (every weight, from the base weights)."""
    model = prob.model()
    graphdef, params = nnx.split(model)
    y = jnp.asarray(prob.targets_ID)

    def loss(p):
        return mse(_x0_outputs(nnx.merge(graphdef, p), prob.tokens_IT, None), y)

    return lbfgs_min(loss, jax.tree.map(lambda x: x[None], params), steps)[0]


# -- the certificate -------------------------------------------------------------------------------------------

def content_attention(prob: WangProblem):
    """A_i (attention output after W_o at the x_0 query, content only) and S_i (sum of exp-scores)."""
    w = prob.weights
    X = w["tok"][prob.tokens_IT]  # I, 2, d
    q = X[:, 1] @ w["wq"]
    k = X @ w["wk"]
    scores = np.einsum("id,itd->it", q, k) / np.sqrt(prob.d)
    e = np.exp(scores)
    A = np.einsum("it,itd->id", e / e.sum(1, keepdims=True), X @ w["wv"]) @ w["wo"]
    return A, e.sum(1)


def certificate(prob: WangProblem, n_grid: int = 20001) -> dict:
    """Lower bound on the MSE of ANY prompt (any length), and the 1-D residual's minimiser s*."""
    w = prob.weights
    x0 = w["tok"][0]
    c = mlp_inverse(w, prob.targets_ID) - x0
    A, S = content_attention(prob)
    s_grid = np.concatenate([[0.0], np.logspace(-12, 12, n_grid), [np.inf]])
    lam = np.where(np.isinf(s_grid)[:, None], 0.0, S[None] / (S[None] + np.where(np.isinf(s_grid), 1.0, s_grid)[:, None]))
    wgt = 1.0 - lam  # G, I
    b = c[None] - lam[..., None] * A[None]  # G, I, d
    num = np.einsum("gi,gid->gd", wgt, b)
    den = np.maximum((wgt**2).sum(1), 1e-300)
    R = (b**2).sum((1, 2)) - (num**2).sum(1) / den
    R = np.where(den > 1e-300, R, (b**2).sum((1, 2)))
    g = int(np.argmin(R))
    n, d = prob.targets_ID.shape
    return {"bound": float((1 - prob.L) ** 2 * R[g] / (n * d)), "residual_min": float(R[g] / (n * d)),
            "s_star": float(s_grid[g]), "L": prob.L}


def relaxed_optimum(prob: WangProblem, restarts: int = 16, steps: int = 300, seed: int = 0) -> float:
    """min over (a in R^d, s > 0) of the true MSE of f(x_0 + lam_i(s) A_i + (1 - lam_i(s)) a): the best any
    prompt could do if key-value coupling did not constrain it."""
    w = {k: jnp.asarray(v) for k, v in prob.weights.items()}
    x0 = w["tok"][:1]
    A, S = (jnp.asarray(v) for v in content_attention(prob))
    y = jnp.asarray(prob.targets_ID)

    def loss(p):
        lam = S / (S + jnp.exp(p["log_s"]))
        h = x0 + lam[:, None] * A + (1 - lam[:, None]) * p["a"][None]
        return mse(h + jax.nn.relu(h @ w["w1"] + w["b1"][None]) @ w["w2"] + w["b2"][None], y)

    k1, k2 = jax.random.split(jax.random.key(seed))
    init = {"a": jax.random.normal(k1, (restarts, prob.d), jnp.float64) * 2,
            "log_s": jax.random.normal(k2, (restarts,), jnp.float64) * 4}
    return lbfgs_min(loss, init, steps)[0]


def hidden_prompt_targets(prob: WangProblem, m_p: int = 2, seed: int = 1):
    """Positive control: targets produced by the same model under a hidden random prompt."""
    prompt = jax.random.normal(jax.random.key(seed), (m_p, prob.d), jnp.float64)
    return _x0_outputs(prob.model(), prob.tokens_IT, Context(jnp.ones((m_p,), bool), embeds_PD=prompt))
