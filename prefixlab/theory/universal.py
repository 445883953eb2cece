"""Petrov, Torr & Bibi (ICML 2024), "Prompting a Pretrained Transformer Can Be a Universal Approximator": a single
frozen attention head whose prefix of N slots makes the head's output at a query x on the sphere approximate f(x).
Here m = 1 (the circle S^1, x = (cos t, sin t)) and a scalar target.

WHAT THIS IS, PLAINLY: the exact text of the paper's Lemma 3 (its key placement, temperature and constants) was
not available to us (only the abstract came back from the stored copies), so this module implements the NATURAL
construction the lemma's idea describes, not a transcription of it:
  * prefix keys on a uniform grid of the circle, theta_i = 2 pi i / N, at radius r (the radius is the inverse
    temperature the prefix chooses: the head itself is fixed);
  * prefix values = the target at the grid points, f(theta_i);
  * the softmax then concentrates on the keys nearest the query.
The head is "pretrained" = fixed weights of the project's own `Attention` module (d_model = 5, one head, K = 2):
  query token   (cos t, sin t, 0, 0, 0)       W_Q reads coords 0,1 (times the fixed scale `HEAD_SCALE`)
  prefix slot i (0, 0, r cos th_i, r sin th_i, f_i)   W_K reads coords 2,3; W_V reads coord 4 into head dim 0
  output        W_O writes head dim 0 to coord 0.
The query token attends to the N slots and to itself; its own key is 0 (W_K ignores coords 0,1) and its own value
0, so it only dilutes by exp(0) against scores of HEAD_SCALE * r * cos(delta). The prefix is N input embeddings
(N x 5), so SGD trains exactly what the construction sets.

Scores are HEAD_SCALE * r * cos(delta) ~ const - lambda delta^2 / 2 with lambda = HEAD_SCALE * r: a Gaussian kernel
in the angle of width 1 / sqrt(lambda). We take lambda = beta N^2 (r = beta N^2 / HEAD_SCALE):
  beta = BETA_SHARP  -> width << grid step: nearest-key lookup, error <= omega_f(pi / N) (first-order Jackson form);
  beta = BETA_SMOOTH -> width = grid step / (2 pi sqrt(beta)) ~ one step: kernel smoothing on the grid, whose bias
                       is O(f'' / lambda) = O(N^-2) for C^2 targets (this is a property of the natural construction,
                       not a claim of the paper).
Rate we compare with (see docs/results/universal.md): the first-order Jackson-type form eps <= omega_f(c / N), i.e.
N = O(1 / omega_f^{-1}(eps)), slope -1 for Lipschitz targets on S^1. The paper's exact exponent/constant for m = 1
could not be checked against its text.

CLI: python -m prefixlab.theory.universal --out docs/results/universal  (float64 throughout).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.results import write_rows_csv
from prefixlab.safe_paths import replace_bytes

D, K = 5, 2  # embedding width, head width
HEAD_SCALE = 1000.0  # the frozen head's query scale (the "pretrained" head's temperature)
BETA_SHARP = 10.0
BETA_SMOOTH = 1.0 / (4 * np.pi**2)  # kernel width = one grid step

TARGETS = {
    "sin3t": lambda t: jnp.sin(3 * t),
    "bump": lambda t: jnp.exp(4.0 * (jnp.cos(t - 1.0) - 1.0)),  # smooth, periodic, width ~ 0.5 rad
    "abs_sin_1.5": lambda t: jnp.abs(jnp.sin(t)) ** 1.5,  # C^{1,1/2}: Lipschitz but not C^2 at t = 0, pi
}


def head_weights(head_scale: float = HEAD_SCALE):
    """The frozen head's weights as numpy arrays in the model's layout (x @ W + b): W_Q, W_K, W_V (D x K), W_O (K x D)."""
    wq, wk, wv, wo = np.zeros((D, K)), np.zeros((D, K)), np.zeros((D, K)), np.zeros((K, D))
    wq[0, 0] = wq[1, 1] = head_scale
    wk[2, 0] = wk[3, 1] = 1.0
    wv[4, 0] = 1.0
    wo[0, 0] = 1.0
    return wq, wk, wv, wo


def head_model(head_scale: float = HEAD_SCALE, dtype: str = "float64"):
    """The same head as the project's Transformer (one layer, one head, no LN/residual/MLP effect on attention);
    `model_head_out` runs its own `Attention.qkv` / `attend`."""
    from prefixlab.config import ModelConfig
    from prefixlab.theory.weights import LayerWeights, build_model

    cfg = ModelConfig(vocab_size=2, block_size=4, n_layer=1, n_head=1, d_model=D, head_dim=K, mlp_hidden=(),
                      activation="relu", ln_attn=False, ln_mlp=False, ln_final=False, residual_attn=False,
                      residual_mlp=False, attn_scale=1.0, causal=True, pos_emb=False, head_bias=True,
                      dropout=0.0, dtype=dtype)
    lw = LayerWeights(cfg)
    lw.q_w, lw.k_w, lw.v_w, lw.o_w = head_weights(head_scale)
    return build_model(cfg, attn=[lw], mlps=[[(np.zeros((D, D)), np.zeros(D))]])  # no MLP hidden layer: a zero map


def model_head_out(model, prefix_ND, t_Q):
    """Head output (coord 0 after W_O) at queries t through the project's Attention module: each query is one
    sequence [N prefix slots ++ the query token]."""
    attn = model.blocks[0].attn
    x_QD = query_tokens(t_Q)
    Q, N = x_QD.shape[0], prefix_ND.shape[0]
    h_BSD = jnp.concatenate([jnp.broadcast_to(prefix_ND, (Q, N, D)), x_QD[:, None]], axis=1)
    q, k, v = attn.qkv(h_BSD)
    out_BQD, _ = attn.attend(q[:, -1:], k, v, jnp.ones((1, N + 1), bool), None)
    return out_BQD[:, 0, 0]


def query_tokens(t_Q):
    return jnp.stack([jnp.cos(t_Q), jnp.sin(t_Q)] + [jnp.zeros_like(t_Q)] * (D - 2), axis=-1)


def head_out(prefix_ND, t_Q, weights):
    """softmax(q k^T) v written out for one query token over [prefix ++ itself]; pure jnp for jit/vmap/grad."""
    wq, wk, wv, wo = weights
    x_QD = query_tokens(t_Q)
    q_QK = x_QD @ wq
    k_SK = jnp.concatenate([prefix_ND @ wk, jnp.zeros((1, K), prefix_ND.dtype)])  # the query's own key is x @ W_K = 0
    v_SK = jnp.concatenate([prefix_ND @ wv, jnp.zeros((1, K), prefix_ND.dtype)])  # ... and its value 0
    p_QS = jax.nn.softmax(q_QK @ k_SK.T, axis=-1)
    return (p_QS @ v_SK @ wo)[:, 0]


def construction(f, N: int, beta: float = BETA_SHARP, head_scale: float = HEAD_SCALE):
    """The prefix (N x D): keys on the uniform grid at radius r = beta N^2 / head_scale, values f(theta_i)."""
    th_N = 2 * np.pi * np.arange(N) / N
    r = beta * N**2 / head_scale
    s_ND = np.zeros((N, D))
    s_ND[:, 2], s_ND[:, 3] = r * np.cos(th_N), r * np.sin(th_N)
    s_ND[:, 4] = np.asarray(f(jnp.asarray(th_N)))
    return jnp.asarray(s_ND)


def dense_t(n: int = 8192):
    return jnp.asarray(2 * np.pi * (np.arange(n) + 0.5) / n)  # offset: never exactly on a grid key


def sup_error(prefix_ND, f, weights, n: int = 8192) -> float:
    t = dense_t(n)
    return float(jnp.abs(head_out(prefix_ND, t, weights) - f(t)).max())


def modulus(f, delta: float, n: int = 8192) -> float:
    """omega_f(delta) = sup_{|s - t| <= delta} |f(s) - f(t)|, on a dense periodic grid."""
    t = np.asarray(dense_t(n))
    y = np.asarray(f(jnp.asarray(t)))
    w = int(np.ceil(delta / (2 * np.pi / n)))
    return float(max(np.abs(np.roll(y, -j) - y).max() for j in range(1, w + 1)))


def train_prefix(f, N: int, seeds, weights, steps: int = 6000, batch: int = 512, lr: float = 3e-3,
                 init_std: float = 0.01, init_ND=None):
    """Adam on the squared error over fresh uniform queries, from a random Gaussian prefix (N x D, std init_std) or
    from `init_ND` for every seed (then the seed only draws the queries), vmapped over seeds. Returns the trained
    prefixes (S x N x D) and the mean loss of the last 100 steps per seed."""
    import optax

    sched = optax.exponential_decay(lr, steps, 1e-2)  # lr -> lr / 100 over the run
    opt = optax.adam(sched)

    def one(key):
        k0, k1 = jax.random.split(key)
        s = init_std * jax.random.normal(k0, (N, D), jnp.float64) if init_ND is None else jnp.asarray(init_ND)
        st = opt.init(s)

        def loss(s, t):
            return jnp.mean((head_out(s, t, weights) - f(t)) ** 2)

        def step(carry, k):
            s, st = carry
            t = jax.random.uniform(k, (batch,), jnp.float64, 0, 2 * np.pi)
            l, g = jax.value_and_grad(loss)(s, t)
            u, st = opt.update(g, st, s)
            return (optax.apply_updates(s, u), st), l

        (s, _), ls = jax.lax.scan(step, (s, st), jax.random.split(k1, steps))
        return s, ls[-100:].mean()

    keys = jnp.stack([jax.random.PRNGKey(int(sd)) for sd in seeds])
    return jax.jit(jax.vmap(one))(keys)


def ci95(x):
    """Mean and 95 % t-interval half-width."""
    from scipy import stats

    x = np.asarray(x, float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def slope(Ns, errs):
    return float(np.polyfit(np.log(Ns), np.log(errs), 1)[0])


def run(out: str, Ns=(4, 8, 16, 32, 64, 128, 256), seeds=(0, 1, 2), steps: int = 6000, log=print):
    import os

    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    weights = tuple(jnp.asarray(w) for w in head_weights())
    rows, summary = [], {}
    for name, f in TARGETS.items():
        for N in Ns:
            sharp = sup_error(construction(f, N, BETA_SHARP), f, weights)
            smooth = sup_error(construction(f, N, BETA_SMOOTH), f, weights)
            s_SND, loss_S = train_prefix(f, N, seeds, weights, steps=steps)
            sgd = [sup_error(s_SND[i], f, weights) for i in range(len(seeds))]
            m, h = ci95(sgd)
            row = dict(target=name, N=N, omega_pi_over_N=modulus(f, np.pi / N), construction_sharp=sharp,
                       construction_smooth=smooth, sgd_mean=m, sgd_ci95=h, sgd_min=min(sgd), sgd_max=max(sgd),
                       sgd_train_mse_mean=float(np.mean(loss_S)), sgd_per_seed=sgd)
            rows.append(row)
            log(f"{name:12s} N={N:4d} omega={row['omega_pi_over_N']:.3e} sharp={sharp:.3e} smooth={smooth:.3e} "
                f"sgd={m:.3e}±{h:.1e}  [{time.time() - t0:.0f}s]")
        sub = [r for r in rows if r["target"] == name]
        Nv = [r["N"] for r in sub]
        summary[name] = {k: slope(Nv, [r[k] for r in sub]) for k in
                         ("omega_pi_over_N", "construction_sharp", "construction_smooth", "sgd_mean")}
    meta = dict(command=f"python -m prefixlab.theory.universal --out {out}", Ns=list(Ns), seeds=list(seeds),
                steps=steps, batch=512, lr="3e-3 exp-decayed to 3e-5", init_std=0.01, head_scale=HEAD_SCALE,
                beta_sharp=BETA_SHARP, beta_smooth=BETA_SMOOTH, sup_grid=8192, dtype="float64",
                wall_s=round(time.time() - t0, 1), slopes_loglog=summary)
    # written to new files renamed over the paths: a link in --out is replaced, never written through
    replace_bytes(os.path.join(out, "results.json"), json.dumps(dict(meta=meta, rows=rows), indent=1).encode())
    write_rows_csv(os.path.join(out, "results.csv"), ({k: v for k, v in r.items() if k != "sgd_per_seed"} for r in rows),
                   [k for k in rows[0] if k != "sgd_per_seed"])
    plot(rows, os.path.join(out, "sup_error.png"))
    return meta, rows


def tail_slopes(path: str, n_min: int = 32):
    """Log-log slopes of each column over N >= n_min, from a results.json written by `run`."""
    rows = [r for r in json.load(open(path))["rows"] if r["N"] >= n_min]
    cols = ("omega_pi_over_N", "construction_sharp", "construction_smooth", "sgd_mean")
    return {name: {c: round(slope([r["N"] for r in rows if r["target"] == name],
                                  [r[c] for r in rows if r["target"] == name]), 3) for c in cols}
            for name in dict.fromkeys(r["target"] for r in rows)}


def diagnose(out: str, target: str = "sin3t", Ns=(64, 256), seeds=(0, 1, 2), log=print):
    """Is SGD's plateau the budget or the landscape? Per N: the default run (6000 steps), 4x the steps, and Adam
    started AT the smooth construction (lr 3e-4: does the construction's point stay put / get better?)."""
    import os

    weights = tuple(jnp.asarray(w) for w in head_weights())
    f = TARGETS[target]
    res = []
    for N in Ns:
        c = construction(f, N, BETA_SMOOTH)
        for label, kw in (("random init, 6000 steps", dict(steps=6000)),
                          ("random init, 24000 steps", dict(steps=24000)),
                          ("init at smooth construction, lr 3e-4, 6000 steps", dict(steps=6000, lr=3e-4, init_ND=c))):
            s_SND, loss_S = train_prefix(f, N, seeds, weights, **kw)
            errs = [sup_error(s_SND[i], f, weights) for i in range(len(seeds))]
            m, h = ci95(errs)
            res.append(dict(target=target, N=N, run=label, sup_mean=m, sup_ci95=h, per_seed=errs,
                            train_mse_mean=float(np.mean(loss_S)), construction_smooth=sup_error(c, f, weights)))
            log(f"{target} N={N} {label}: sup {m:.3e} ± {h:.1e} (construction {res[-1]['construction_smooth']:.3e})")
    replace_bytes(os.path.join(out, "diagnose.json"), json.dumps(
        dict(command=f"python -m prefixlab.theory.universal --out {out} --diagnose", rows=res), indent=1).encode())
    return res


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab.sweep_report import save_figure

    names = list(dict.fromkeys(r["target"] for r in rows))
    fig, axs = plt.subplots(1, len(names), figsize=(5 * len(names), 4), sharey=True)
    for ax, name in zip(np.atleast_1d(axs), names):
        sub = [r for r in rows if r["target"] == name]
        N = np.array([r["N"] for r in sub])
        ax.loglog(N, [r["omega_pi_over_N"] for r in sub], "k--", label="Jackson form ω_f(π/N)")
        ax.loglog(N, [r["construction_sharp"] for r in sub], "o-", label=f"construction β={BETA_SHARP:g}")
        ax.loglog(N, [r["construction_smooth"] for r in sub], "s-", label="construction β=1/4π²")
        m = np.array([r["sgd_mean"] for r in sub])
        ax.errorbar(N, m, yerr=[r["sgd_ci95"] for r in sub], fmt="^-", capsize=3, label="Adam (3 seeds, 95% CI)")
        ax.set_title(name)
        ax.set_xlabel("prefix length N")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axs)[0].set_ylabel("sup-error over 8192 queries")
    np.atleast_1d(axs)[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--Ns", default="4,8,16,32,64,128,256")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--diagnose", action="store_true", help="only the SGD budget/landscape diagnostic (sin3t)")
    ap.add_argument("--slopes", action="store_true", help="only print tail slopes (N >= 32) of OUT/results.json")
    a = ap.parse_args(argv)
    if a.slopes:
        print(json.dumps(tail_slopes(f"{a.out}/results.json"), indent=1))
        return
    with jax.enable_x64(True):
        if a.diagnose:
            diagnose(a.out)
            return
        run(a.out, tuple(int(n) for n in a.Ns.split(",")), tuple(int(s) for s in a.seeds.split(",")), a.steps)


if __name__ == "__main__":
    main()
