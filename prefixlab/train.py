"""Pure functional training: split/merge + value_and_grad + optax, lax.scan over chunks, vmap over runs.

`run_training` trains R runs at once: trainable state with a leading run axis, a frozen state shared by all
runs (broadcast by vmap, so memory grows with the trainable part only). The host syncs once per chunk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from flax import nnx
from tqdm.auto import tqdm

from prefixlab.config import ModelConfig
from prefixlab.model import Context, Transformer
from prefixlab.tasks import FIRST_TARGET, Batch, Mixture


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with the reference defaults (minGPT): betas (0.9, 0.95), decay 0.1 on matrices, clip 1.0."""

    lr: float = 5e-4
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.1
    clip: float = 1.0


def _is_matrix_kernel(path, leaf) -> bool:
    return getattr(path[-1], "key", None) == "kernel" and leaf.ndim == 2


def make_optimizer(oc: OptimConfig) -> optax.GradientTransformation:
    """Clipped AdamW at unit learning rate; `run_training` scales the updates by each run's own learning
    rate, which is exactly AdamW at that rate (optax applies -lr to the update, weight decay included), so
    runs with different learning rates share one compiled program. Weight decay only on Linear kernels
    (not biases, LayerNorm, embeddings or context parameters)."""
    mask = lambda params: jax.tree_util.tree_map_with_path(_is_matrix_kernel, params)
    return optax.chain(
        optax.clip_by_global_norm(oc.clip),
        optax.adamw(1.0, b1=oc.b1, b2=oc.b2, weight_decay=oc.weight_decay, mask=mask),
    )


def lm_loss(model: Transformer, batch: Batch, ctx: Context | None = None, dropout_key=None):
    """Mean cross-entropy over the masked (target) positions. The mask is zero before FIRST_TARGET (the inputs),
    so only the target positions' logits are computed: same loss and gradients, and the last block does its
    query/attention-output/MLP work on 10 of 19 positions."""
    logits_BTV = model(batch.tokens_BT, ctx, dropout_key, logits_from=FIRST_TARGET).astype(jnp.float32)
    targets_BT, mask_BT = batch.targets_BT[:, FIRST_TARGET:], batch.mask_BT[:, FIRST_TARGET:]
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    return (ce_BT * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0)


# On CPU, runs sharing a frozen base go two at a time: the fastest measured width (docs/performance.md).
CPU_RUN_BATCH = 2


def default_run_batch(shares_base: bool) -> int:
    """Runs computed side by side by default: all of them (0, vmap) on GPU/TPU; on CPU `CPU_RUN_BATCH` for runs
    that share a frozen base, else one at a time."""
    if jax.default_backend() != "cpu":
        return 0
    return CPU_RUN_BATCH if shares_base else 1


def run_keys(seeds) -> jax.Array:
    """One PRNG key per run, from integer seeds."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def _chunk_sizes(steps: int, chunk: int) -> list[int]:
    full, rest = divmod(steps, chunk)
    return [chunk] * full + ([rest] if rest else [])


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
):
    """Trains R runs for `steps` steps in one compiled program: `trainable_R`, `run_data_R` (per-run constants,
    e.g. the context mask), `lr_R` and `key_R` carry a leading run axis; `frozen` is shared by all runs
    (vmap broadcasts it, so memory grows with the trainable part only).
    per_base=True: every argument has an extra leading base axis (one frozen base per pretraining seed, each
    shared by its R runs), so all seeds' groups run in one program: shapes (S, R, ...), `frozen` (S, ...).
    Step s of a run uses key fold_in(its key, s), so results do not depend on the chunk size.
    Returns (trainable, losses (..., steps) as a host array, wall seconds); `chunk_times`, if given, receives
    each chunk's seconds (the first includes compilation).
    run_batch: runs of one base computed side by side within the program; 0 = all (vmap); default:
    `default_run_batch`. Bases (per_base) go one after another on CPU.
    resume: a `checkpoint.ChunkCheckpoint`; training starts from its last save, if any, and saves between chunks
    (at most every `resume.every_s` seconds); the caller clears it once the result is stored."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")

    def one_run_chunk(trainable, opt_state, frozen, run_data, lr, key, steps_C):
        def body(carry, step):
            tr, os = carry
            loss, grads = jax.value_and_grad(loss_fn)(tr, frozen, run_data, jax.random.fold_in(key, step))
            updates, os = optimizer.update(grads, os, tr)
            updates = jax.tree.map(lambda u: u * lr.astype(u.dtype), updates)
            return (optax.apply_updates(tr, updates), os), loss

        (trainable, opt_state), losses_C = jax.lax.scan(body, (trainable, opt_state), steps_C)
        return trainable, opt_state, losses_C

    if run_batch is None:
        run_batch = default_run_batch(shares_base=frozen is not None)

    def over_runs(trainable, opt_state, frozen, run_data, lr, key, steps_C):
        if run_batch == 0:  # all runs side by side: what fills an accelerator
            return jax.vmap(one_run_chunk, in_axes=(0, 0, None, 0, 0, 0, None))(
                trainable, opt_state, frozen, run_data, lr, key, steps_C)
        body = lambda xs: one_run_chunk(xs[0], xs[1], frozen, xs[2], xs[3], xs[4], steps_C)
        return jax.lax.map(body, (trainable, opt_state, run_data, lr, key), batch_size=run_batch)

    init = jax.vmap(optimizer.init)
    if per_base:
        inner = over_runs
        if run_batch == 0:
            over_runs = jax.vmap(inner, in_axes=(0, 0, 0, 0, 0, 0, None))
        else:  # bases one after another too
            over_runs = lambda tr, os, fr, rd, lr, key, steps_C: jax.lax.map(
                lambda xs: inner(*xs, steps_C), (tr, os, fr, rd, lr, key))
        init = jax.vmap(init)
    lr_R = jnp.asarray(lr_R, jnp.float32)
    mesh = run_mesh()
    if mesh is None:
        chunk_fn = jax.jit(over_runs, donate_argnums=(0, 1))
        trainable_R = jax.tree.map(jnp.copy, trainable_R)  # chunks donate their inputs; keep the caller's
    else:  # every device runs its slice of the runs with the single-device program: same numbers as 1 device
        run_axis = 1 if per_base else 0
        R = jax.tree.leaves(trainable_R)[0].shape[run_axis]
        spec = P(*[None] * run_axis, "runs")
        chunk_fn = jax.jit(jax.shard_map(over_runs, mesh=mesh, in_specs=(spec, spec, P(), spec, spec, spec, P()),
                                         out_specs=(spec, spec, spec)), donate_argnums=(0, 1))
        place = lambda tree, sp: jax.device_put(tree, NamedSharding(mesh, sp))
        pad = lambda tree: place(_pad_runs(tree, run_axis, -R % mesh.size), spec)
        trainable_R, run_data_R, lr_R, key_R = map(pad, (trainable_R, run_data_R, lr_R, key_R))
        frozen = place(frozen, P())
    opt_state_R = jax.jit(init)(trainable_R)
    losses, done = [], 0
    if resume is not None and (state := resume.load(trainable_R, opt_state_R)) is not None:
        trainable_R, opt_state_R, done, losses_done = state
        losses = [losses_done]
    if mesh is not None:
        trainable_R, opt_state_R = place(trainable_R, spec), place(opt_state_R, spec)
    start = last_save = time.perf_counter()
    with tqdm(total=steps, initial=done, desc=desc, unit="step", disable=not progress, dynamic_ncols=True,
              leave=False) as bar:
        for size in _chunk_sizes(steps - done, chunk):
            t_chunk = time.perf_counter()
            trainable_R, opt_state_R, losses_RC = chunk_fn(
                trainable_R, opt_state_R, frozen, run_data_R, lr_R, key_R, jnp.arange(done, done + size)
            )
            losses_RC = jax.device_get(losses_RC)  # the one host sync per chunk
            losses.append(losses_RC)
            if chunk_times is not None:
                chunk_times.append(time.perf_counter() - t_chunk)
            done += size
            bar.update(size)
            bar.set_postfix(loss=f"{float(np.nanmean(losses_RC[..., -1])):.4f}")
            if resume is not None and done < steps and time.perf_counter() - last_save >= resume.every_s:
                resume.save(trainable_R, opt_state_R, done, np.concatenate(losses, axis=-1))
                last_save = time.perf_counter()
    losses = np.concatenate(losses, axis=-1)
    if mesh is not None:  # drop the padding runs; hand back ordinary single-device arrays
        keep = lambda x: jnp.asarray(np.take(np.asarray(x), np.arange(R), axis=run_axis))
        trainable_R, losses = jax.tree.map(keep, jax.device_get(trainable_R)), np.take(losses, np.arange(R), run_axis)
    return trainable_R, losses, time.perf_counter() - start


def run_mesh():
    """A one-axis mesh ('runs') over all devices, or None on a single device."""
    return jax.make_mesh((jax.device_count(),), ("runs",)) if jax.device_count() > 1 else None


def _pad_runs(tree, axis: int, pad: int):
    """Repeats run 0 `pad` times along `axis` so the run axis divides evenly over the devices."""
    if pad == 0:
        return tree
    extend = lambda x: jnp.concatenate([x, jnp.repeat(jax.lax.slice_in_dim(x, 0, 1, axis=axis), pad, axis)], axis)
    return jax.tree.map(extend, tree)


def abstract_model(cfg: ModelConfig, lora=None):
    """(graphdef, abstract state) without allocating parameters."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0), lora=lora)))


def init_params(cfg: ModelConfig, key_R: jax.Array, lora=None):
    """Model parameters for each run key (leading run axis) and the shared graphdef."""
    graphdef, _ = abstract_model(cfg, lora)
    init = lambda k: nnx.state(Transformer(cfg, rngs=nnx.Rngs(params=k), lora=lora))
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
):
    """Pretrains one base per seed (vmapped) with dropout. Returns graphdef, params_R, losses_RS, wall_s.
    resume: a `checkpoint.ChunkCheckpoint` to continue from and save to between chunks."""
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
    params_R, losses_RS, wall = run_training(
        loss_fn, params_R, None, None, lr_R, make_optimizer(optim), train_key_R, steps, chunk,
        desc=f"pretrain {mixture.spec} ({len(seeds)} seeds)", progress=progress, resume=resume,
    )
    return graphdef, params_R, losses_RS, wall


def final_loss(losses_RS, window: int = 100):
    """Mean training loss over the last `window` steps, per run."""
    w = min(window, losses_RS.shape[-1])
    return losses_RS[..., -w:].mean(axis=-1)


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
