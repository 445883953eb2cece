"""Pure functional training: split/merge + value_and_grad + optax, lax.scan over chunks, vmap over runs.

`run_training` trains R runs at once: trainable state with a leading run axis, a frozen state shared by all
runs (broadcast by vmap, so memory grows with the trainable part only). The host syncs once per chunk.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.host_loop import TICK_EVERY, ChunkTimes, ProgressBar, ResumeSaves, progress_tick, train_chunks
from prefixlab.model import Context, Transformer, abstract_model
from prefixlab.processes import to_host
from prefixlab.run_layout import RunLayout, one_run_chunk
from prefixlab.stopping import RUN_AXIS_OFFSET
from prefixlab.tasks import FIRST_TARGET, Batch, Mixture


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with the reference defaults (minGPT): betas (0.9, 0.95), decay 0.1 on matrices, clip 1.0.
    decay_all: weight decay on every trained tensor, not only Linear kernels; clip_per_tensor: each tensor's
    gradient clipped to norm `clip` on its own, not the global norm (the reference's tuning trainers, below)."""

    lr: float = 5e-4
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.1
    clip: float = 1.0
    decay_all: bool = False
    clip_per_tensor: bool = False


# The reference's tuning optimizer (minGPT/mingpt/trainer.py, PrefixTrainer and LoRATrainer): torch's AdamW with
# its default weight decay 0.01 on the tuned tensors and clip_grad_norm_ called on each tensor (lora_A, lora_B,
# the prefix) by itself.
REFERENCE_TUNING = OptimConfig(weight_decay=0.01, decay_all=True, clip_per_tensor=True)


def clip_each_tensor(max_norm: float) -> optax.GradientTransformation:
    """Scales every gradient leaf to norm <= max_norm on its own, as torch.nn.utils.clip_grad_norm_ on one tensor
    does (coefficient max_norm / (norm + 1e-6), capped at 1)."""

    def update(updates, state, params=None):
        def clip(g):
            coef = max_norm / (jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)))) + 1e-6)
            return g * jnp.minimum(coef, 1.0).astype(g.dtype)
        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _is_matrix_kernel(path, leaf) -> bool:
    return getattr(path[-1], "key", None) == "kernel" and leaf.ndim == 2


def make_optimizer(oc: OptimConfig) -> optax.GradientTransformation:
    """Clipped AdamW at unit learning rate; `run_training` scales the updates by each run's own learning
    rate, which is exactly AdamW at that rate (optax applies -lr to the update, weight decay included), so
    runs with different learning rates share one compiled program. Weight decay only on Linear kernels
    (not biases, LayerNorm, embeddings or context parameters) unless `decay_all`."""
    mask = None if oc.decay_all else (lambda params: jax.tree_util.tree_map_with_path(_is_matrix_kernel, params))
    return optax.chain(
        clip_each_tensor(oc.clip) if oc.clip_per_tensor else optax.clip_by_global_norm(oc.clip),
        optax.adamw(1.0, b1=oc.b1, b2=oc.b2, weight_decay=oc.weight_decay, mask=mask),
    )


def lm_loss(model: Transformer, batch: Batch, ctx: Context | None = None, dropout_key=None):
    """Mean cross-entropy over the masked (target) positions. The mask is zero before FIRST_TARGET (the inputs),
    so only the target positions' logits are computed: same loss and gradients, and the last block does its
    query/attention-output/MLP work on 10 of 19 positions."""
    return target_scores(model, batch, ctx, dropout_key)[0]


def target_scores(model: Transformer, batch: Batch, ctx: Context | None = None, dropout_key=None):
    """(mean cross-entropy over the target positions, exact_B: every target token is the argmax). Teacher-forced
    exact match equals greedy decoding's: greedy decoding feeds back its own tokens, which are the targets as long
    as every earlier one was right."""
    logits_BTV = model(batch.tokens_BT, ctx, dropout_key, logits_from=FIRST_TARGET).astype(jnp.float32)
    targets_BT, mask_BT = batch.targets_BT[:, FIRST_TARGET:], batch.mask_BT[:, FIRST_TARGET:]
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    exact_B = (logits_BTV.argmax(-1) == targets_BT).all(axis=1)
    return (ce_BT * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0), exact_B


def run_keys(seeds) -> jax.Array:
    """One PRNG key per run, from integer seeds."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def run_training(
    loss_fn: Callable,  # (trainable, frozen, run_data, key) -> scalar loss
    trainable_R,
    frozen,
    run_data_R,
    lr_R,
    optimizer: optax.GradientTransformation,
    key_R: jax.Array,
    steps: int,
    chunk: int = 250,
    desc: str = "train",
    progress: bool = True,
    per_base: bool = False,
    chunk_times: list | None = None,
    run_batch: int | None = None,
    resume=None,
    stopping=None,
):
    """Trains R runs for `steps` steps in one compiled program: `trainable_R`, `run_data_R` (per-run constants,
    e.g. the context mask), `lr_R` and `key_R` carry a leading run axis; `frozen` is shared by all runs
    (vmap broadcasts it, so memory grows with the trainable part only).
    per_base=True: every argument has an extra leading base axis (one frozen base per pretraining seed, each
    shared by its R runs), so all seeds' groups run in one program: shapes (E, R, ...), `frozen` (E, ...).
    Step s of a run uses key fold_in(its key, s), so results do not depend on the chunk size.
    Returns (trainable, losses (..., steps) as a host array, wall seconds); `chunk_times`, if given, receives
    each chunk's seconds (the first includes compilation).
    run_batch: runs of one base computed side by side within the program; 0 = all (vmap); default:
    `run_layout.default_run_batch`. Bases (per_base) go one after another on CPU.
    resume: a `checkpoint.ChunkCheckpoint`; training starts from its last save, if any, and saves between chunks
    (at most every `resume.every_s` seconds); the caller clears it once the result is stored.
    stopping: a `stopping.EarlyStopping`: runs are scored after every chunk and stop on its rule (their learning
    rate becomes 0); training ends when all have stopped, the returned trainable holds each run's best parameters
    and the losses cover the steps done; afterwards `stopping.stop_step` and `stopping.reason` hold per-run arrays.
    The parts, for other loops: run_layout.one_run_chunk (pure), RunLayout (how runs share the program and the
    devices), host_loop.train_chunks (chunks and callbacks)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    layout = RunLayout.default(per_base, shares_base=frozen is not None, run_batch=run_batch)
    chunk_fn = layout.compile(one_run_chunk(loss_fn, optimizer, progress_tick if progress else None, TICK_EVERY))
    E, R = jax.tree.leaves(trainable_R)[0].shape[:2] if per_base else (1, jax.tree.leaves(trainable_R)[0].shape[0])
    trainable_R, frozen, run_data_R, lr_R, key_R = layout.place(
        trainable_R, frozen, run_data_R, jnp.asarray(lr_R, jnp.float32), key_R)
    opt_state_R = layout.init_optimizer(optimizer)(trainable_R)
    if stopping is not None:
        stopping.start(trainable_R, frozen, run_data_R, lr_R.shape, layout.shard,
                       to_host if layout.mesh is not None else lambda t: t,  # validate runs on one device
                       n_evals=-(-steps // chunk))
    losses, done = [], 0
    if resume is not None and (state := resume.load(trainable_R, opt_state_R, stopping and stopping.state())):
        trainable_R, opt_state_R, done, losses_done, stop_state = state
        losses = [losses_done]
        if stopping is not None:
            stopping.load_state(stop_state)
    trainable_R, opt_state_R = layout.shard(trainable_R), layout.shard(opt_state_R)
    start = time.perf_counter()
    bar = ProgressBar(steps, done, desc, progress, layout.passes(R, E) / TICK_EVERY)
    callbacks = [bar] + ([ResumeSaves(resume, steps, stopping)] if resume is not None else []) + (
        [ChunkTimes(chunk_times)] if chunk_times is not None else [])
    try:
        trainable_R, _, losses = train_chunks(chunk_fn, trainable_R, opt_state_R, (frozen, run_data_R, lr_R, key_R),
                                              steps, chunk, done, losses, callbacks, stopping)
    finally:
        bar.close()
    if stopping is not None:
        trainable_R = stopping.finish(losses.shape[-1])
        for name in ("stop_step", "reason", "falling_at_stop", *RUN_AXIS_OFFSET):  # without the padding runs
            axis = layout.run_axis + RUN_AXIS_OFFSET.get(name, 0)
            setattr(stopping, name, np.take(getattr(stopping, name), np.arange(R), axis))
    trainable_R, losses = layout.unplace(trainable_R, losses, R)
    return trainable_R, losses, time.perf_counter() - start


def init_params(cfg: ModelConfig, key_R: jax.Array):
    """Base-model parameters for each run key (leading run axis) and the shared graphdef."""
    graphdef, _ = abstract_model(cfg)
    init = lambda k: nnx.state(Transformer(cfg, rngs=nnx.Rngs(params=k)))
    return graphdef, jax.jit(jax.vmap(init))(key_R)


def pretrain(
    cfg: ModelConfig,
    mixture: Mixture,
    seeds: list[int],
    steps: int,
    batch_size: int = 64,
    optim: OptimConfig = OptimConfig(),
    chunk: int = 250,
    progress: bool = True,
    resume=None,
    stopping=None,
):
    """Pretrains one base per seed (vmapped) with dropout. Returns graphdef, params_R, losses_RU, wall_s.
    resume: a `checkpoint.ChunkCheckpoint` to continue from and save to between chunks.
    stopping: a `stopping.EarlyStopping` whose validator scores a base (`evaluate.base_builder`): each seed stops
    at convergence within the `steps` budget and hands back its best parameters; its losses are NaN after its stop
    step (losses_RU keeps `steps` columns) and `stopping.stop_step` / `stopping.reason` say when and why."""
    if cfg.vocab_size != mixture.vocab_size:
        raise ValueError(f"model vocabulary {cfg.vocab_size} != task vocabulary {mixture.vocab_size}")
    key_R = run_keys(seeds)
    init_key_R = jax.vmap(lambda k: jax.random.fold_in(k, 0))(key_R)
    train_key_R = jax.vmap(lambda k: jax.random.fold_in(k, 1))(key_R)
    graphdef, params_R = init_params(cfg, init_key_R)

    def loss_fn(params, _frozen, _run_data, key):
        k_data, k_drop = jax.random.split(key)
        model = nnx.merge(graphdef, params)
        return lm_loss(model, mixture.batch(k_data, batch_size), None, k_drop)

    lr_R = jnp.full((len(seeds),), optim.lr)
    params_R, losses_RU, wall = run_training(
        loss_fn, params_R, None, None, lr_R, make_optimizer(optim), train_key_R, steps, chunk,
        desc=f"pretrain {mixture.spec} ({len(seeds)} seeds)", progress=progress, resume=resume, stopping=stopping,
    )
    if stopping is not None:  # each seed's curve ends at its own stop
        cols_U = np.arange(steps)
        padded = np.full((len(seeds), steps), np.nan, np.float32)
        padded[:, :losses_RU.shape[-1]] = losses_RU
        losses_RU = np.where(cols_U[None] < np.asarray(stopping.stop_step)[:, None], padded, np.nan)
    return graphdef, params_R, losses_RU, wall


def final_loss(losses_RU, window: int = 100):
    """Mean training loss over the last `window` steps, per run."""
    w = min(window, losses_RU.shape[-1])
    return losses_RU[..., -w:].mean(axis=-1)


def model_flops_per_step(cfg: ModelConfig, batch_size: int, seq_len: int, context_len: int = 0,
                         scored: int | None = None) -> float:
    """Analytic training FLOPs per step actually executed: 6 x (matmul parameters) x positions + attention
    score/value matmuls. `scored` = positions whose logits are computed (lm_loss: the targets); the last block
    computes q, k, v at every position but attention, output projection, MLP and head only at those."""
    S = seq_len + context_len
    Q = S if scored is None else scored
    D, H, K = cfg.d_model, cfg.n_head, cfg.hd
    widths = (D, *cfg.hidden, D)
    mlp = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    qkv, rest = 3 * D * H * K, H * K * D + mlp
    matmuls = cfg.n_layer * qkv * S + (cfg.n_layer - 1) * rest * S + (rest + D * cfg.vocab_size) * Q
    attn = 2 * 2 * S * H * K * ((cfg.n_layer - 1) * S + Q)  # q k^T and p v, forward, per sequence
    return 3 * (2 * matmuls + attn) * batch_size
