"""Capacity scan ("cram", issue 35 item 2): how long a random sequence a trained context makes a frozen model
generate greedily, as a function of the context length P.

Every run holds one random target y_0..y_{N-1}; the content is a fixed start token, and the model must generate the
target greedily after it. All runs of one method (targets x seeds x P, P padded to the largest and masked, as
tune.py does) train in one compiled program over one frozen base. Curriculum: a run trains on its first n target
tokens until they are all right, then n grows to one past its leading correct tokens (one at a time, unless
later ones are already right); a teacher-forced 99 % can still be 0 % greedy, so only an exact prefix counts. Teacher-forced argmax of the first n positions equals greedy decoding of them (the decoder feeds
back its own tokens, which are the targets while each is right), so training checks that cheaply every step; the
reported N_max is measured afterwards by `decode.greedy_generate` on the kept parameters, independently.
A run stops when it reaches the cap (the longest target), when one increment takes more than `patience` steps
("stalled": it keeps its best parameters and N_max from then on) or at the total `steps` budget.

Precisions: "bfloat16" (a float32 model whose matmuls take bf16 operands, config.compute_dtype), "float32",
"float64" (the base cast to float64; run under jax.enable_x64, which this module turns on for that run only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from prefixlab.config import ModelConfig
from prefixlab.decode import greedy_generate
from prefixlab.methods import Method, RunData
from prefixlab.train import OptimConfig, make_optimizer
from prefixlab.tune import run_key

PRECISIONS = ("bfloat16", "float32", "float64")
STOP_REASONS = ("cap", "stalled", "budget")


def precision_cfg(cfg: ModelConfig, precision: str) -> ModelConfig:
    """The model config that computes in `precision` (dropout off: the base is frozen and scored greedily)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bfloat16":
        return cfg.replace(dtype="float32", compute_dtype="bfloat16", dropout=0.0)
    return cfg.replace(dtype=precision, compute_dtype=None, dropout=0.0)


def precision_scope(precision: str):
    """float64 needs x64 on while its arrays are made and its program runs; other precisions leave it as it is."""
    return jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class CramSpec:
    """One compiled program: `method` at context lengths `lengths` on a base of config `cfg` computed in `precision`.
    n_cap: the longest target (<= cfg.block_size: the start token and n_cap - 1 generated tokens take n_cap
    positions). patience: steps one curriculum increment may take; steps: the total budget per run; chunk: steps
    between host syncs (progress)."""

    method: Method
    cfg: ModelConfig
    precision: str
    lengths: tuple[int, ...]
    n_cap: int
    lr: float = 1e-2
    patience: int = 200
    steps: int = 2000
    chunk: int = 50
    start_token: int = 0

    def __post_init__(self):
        if not self.method.uses_context:
            raise ValueError(f"cram needs a context method (one that runs at context lengths P); "
                             f"{self.method.name!r} is not")
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError(f"lengths must be context lengths >= 1, got {self.lengths}")
        if not 1 <= self.n_cap <= self.cfg.block_size:
            raise ValueError(f"n_cap must be in 1..block_size ({self.cfg.block_size}), got {self.n_cap}")
        if not 0 <= self.start_token < self.cfg.vocab_size:
            raise ValueError(f"start_token {self.start_token} is outside the vocabulary 0..{self.cfg.vocab_size - 1}")
        if min(self.patience, self.steps, self.chunk) < 1:
            raise ValueError("patience, steps and chunk must be >= 1")
        precision_cfg(self.cfg, self.precision)  # refuses an unknown precision


def random_targets(seed: int, n: int, length: int, vocab_size: int) -> np.ndarray:
    """n random target sequences (n, length), uniform over the vocabulary, from `seed`."""
    return np.asarray(jax.random.randint(jax.random.key(seed), (n, length), 0, vocab_size), np.int32)


def leading_matches(pred_RN, target_RN):
    """Per run, how many leading tokens of pred equal the target's."""
    return jnp.cumprod(pred_RN == target_RN, axis=-1).sum(-1, dtype=jnp.int32)


def _curriculum_step(loss_fn, optimizer, n_cap: int, patience: int):
    """One step of one run. carry: (trainable, opt_state, n: tokens trained on, since: steps in this increment,
    best_n, best trainable, stop: 0 running / 1 + index in STOP_REASONS, used: steps trained)."""

    def step(carry, frozen, run_data, target_N, lr):
        tr, opt, n, since, best_n, best, stop, used = carry
        (loss, lead), grads = jax.value_and_grad(loss_fn, has_aux=True)(tr, frozen, run_data, target_N, n)
        running = stop == 0
        better = running & (lead > best_n)  # lead is of `tr`, before this step's update
        best = jax.tree.map(lambda b, t: jnp.where(better, t, b), best, tr)
        best_n = jnp.where(better, lead, best_n)
        reached = lead >= n
        n = jnp.where(running & reached, jnp.minimum(lead + 1, n_cap), n)
        since = jnp.where(reached, 0, since + 1)
        stop = jnp.where(running & (lead >= n_cap), 1, jnp.where(running & (since > patience), 2, stop))
        move = stop == 0
        updates, new_opt = optimizer.update(grads, opt, tr)
        new_tr = optax.apply_updates(tr, jax.tree.map(lambda u: u * lr.astype(u.dtype), updates))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(move, a, b), new, old)
        return (keep(new_tr, tr), keep(new_opt, opt), n, since, best_n, best, stop, used + move), loss

    return step


@functools.lru_cache(maxsize=8)
def _program(method: Method, cfg: ModelConfig, P: int, n_cap: int, patience: int, start_token: int):
    """(init over runs, chunk over runs, decode over runs): jitted, vmapped over the run axis, base broadcast. Kept
    per shape-deciding setting, so that another base, learning rate or step budget reuses the compiled programs."""
    graphdef = method.graphdef(cfg)
    tokens_of = lambda target_N: jnp.concatenate([jnp.full((1,), start_token, target_N.dtype), target_N[:-1]])

    def loss_fn(trainable, frozen, run_data, target_N, n):
        model, ctx = method.build(graphdef, trainable, frozen, run_data, cfg)
        logits_NV = model(tokens_of(target_N)[None], ctx)[0].astype(jnp.float32)
        ce_N = optax.softmax_cross_entropy_with_integer_labels(logits_NV, target_N)
        mask_N = (jnp.arange(target_N.shape[0]) < n).astype(jnp.float32)
        lead = leading_matches(logits_NV.argmax(-1), target_N)
        return (ce_N * mask_N).sum() / mask_N.sum(), lead

    optimizer = make_optimizer(OptimConfig(weight_decay=0.0))
    step = _curriculum_step(loss_fn, optimizer, n_cap, patience)

    def init_one(key, frozen):
        tr = method.init(key, cfg, frozen, P)
        zero = jnp.zeros((), jnp.int32)
        return (tr, optimizer.init(tr), jnp.ones((), jnp.int32), zero, zero, tr, zero, zero)

    def chunk_one(carry, frozen, run_data, target_N, lr, n_steps):
        body = lambda c, _: step(c, frozen, run_data, target_N, lr)
        return jax.lax.scan(body, carry, None, length=n_steps)

    def decode_one(trainable, frozen, run_data):
        model, ctx = method.build(graphdef, trainable, frozen, run_data, cfg)
        start = jnp.full((1, 1), start_token, jnp.int32)
        return greedy_generate(model, start, n_cap, ctx)[0]

    init = jax.jit(jax.vmap(init_one, in_axes=(0, None)))
    chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, None, 0, 0, None, None)), static_argnums=5)
    decode = jax.jit(jax.vmap(decode_one, in_axes=(0, None, 0)))
    return init, chunk, decode


def cram(spec: CramSpec, base_params, targets_IN: np.ndarray, seeds, *, progress: bool = True,
         label: str = "") -> tuple[list[dict], object]:
    """Trains spec.method's context for every (P in spec.lengths, target i, seed) at once on the frozen
    `base_params` (a float32 or float64 state of a model of spec.cfg; cast to the precision's dtype).
    targets_IN: (I, >= n_cap) token ids; each run learns the first n_cap. Returns (records, best trainable with a
    leading run axis, runs in record order). A record: method, precision, context_len, target, seed, n_max (the
    leading target tokens that greedy decoding of the kept parameters reproduces), n_max_forced (the same by
    teacher forcing, during training), n_curve (n_max_forced after each chunk of steps), n_cap, reached_cap,
    stop_reason, steps_used, trainable_floats (the method's count at this P), bits_per_float (n_max log2 V / trainable_floats), lr, wall_s (the program's, per run)."""
    targets_IN = np.asarray(targets_IN)
    if targets_IN.ndim != 2 or targets_IN.shape[1] < spec.n_cap:
        raise ValueError(f"targets must have shape (I, >= n_cap = {spec.n_cap}), got {targets_IN.shape}")
    V = spec.cfg.vocab_size
    if targets_IN.min() < 0 or targets_IN.max() >= V:
        raise ValueError(f"targets must be token ids in 0..{V - 1}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("cram needs at least one seed")
    method, P = spec.method, max(spec.lengths)
    runs = [(p, i, s) for p in spec.lengths for i in range(len(targets_IN)) for s in seeds]
    with precision_scope(spec.precision):
        cfg = precision_cfg(spec.cfg, spec.precision)
        frozen = _cast(base_params, cfg)
        init, chunk, decode = _program(method, cfg, P, spec.n_cap, spec.patience, spec.start_token)
        keys_R = jnp.stack([run_key(s, method, f"cram|{spec.precision}|target{i}", p, spec.lr) for p, i, s in runs])
        run_data_R = RunData(jnp.asarray(np.arange(P)[None, :] < np.array([p for p, _, _ in runs])[:, None]))
        target_RN = jnp.asarray(np.stack([targets_IN[i, :spec.n_cap] for _, i, _ in runs]), jnp.int32)
        lr = jnp.asarray(spec.lr, jnp.float32)
        start = time.perf_counter()
        carry = init(keys_R, frozen)
        done, curve = 0, []
        with tqdm(total=spec.steps, desc=f"{label}cram {method.name} {spec.precision} ({len(runs)} runs)",
                  unit="step", disable=not progress, dynamic_ncols=True, leave=False) as bar:
            while done < spec.steps:
                size = min(spec.chunk, spec.steps - done)
                carry, _ = chunk(carry, frozen, run_data_R, target_RN, lr, size)
                done += size
                stop_R, best_R = np.asarray(carry[6]), np.asarray(carry[4])
                curve.append(best_R)
                bar.update(size)
                bar.set_postfix_str(f"stopped {int((stop_R > 0).sum())}/{len(runs)}, mean N {best_R.mean():.1f}")
                if (stop_R > 0).all():
                    break
        best_tr = carry[5]
        decoded_RN = decode(best_tr, frozen, run_data_R)
        n_max_R = np.asarray(leading_matches(decoded_RN, target_RN))
        wall = time.perf_counter() - start
        best_tr = jax.tree.map(np.asarray, best_tr)  # host copies: usable after the x64 scope ends
    forced_R, stop_R, used_R = (np.asarray(carry[k]) for k in (4, 6, 7))
    records = []
    for r, (p, i, s) in enumerate(runs):
        floats = method.n_params(spec.cfg, p)
        n = int(n_max_R[r])
        records.append(dict(method=method.name, precision=spec.precision, context_len=p, target=i, seed=s,
                            n_max=n, n_max_forced=int(forced_R[r]), n_cap=spec.n_cap,
                            reached_cap=n >= spec.n_cap,
                            stop_reason=STOP_REASONS[stop_R[r] - 1] if stop_R[r] else "budget",
                            steps_used=int(used_R[r]), trainable_floats=floats,
                            n_curve=[int(c[r]) for c in curve],
                            bits_per_float=n * math.log2(V) / floats, lr=spec.lr, wall_s=wall / len(runs)))
    return records, best_tr


def greedy_reconstruction(spec: CramSpec, base_params, trainable, context_len: int) -> np.ndarray:
    """The n_cap tokens greedy decoding generates after the start token with one run's trained context (no run
    axis; slots past context_len masked, as in training), through `decode.greedy_generate` in spec's precision, by
    itself rather than inside the scan's vmapped program: an independent check of a record's n_max."""
    with precision_scope(spec.precision):
        cfg = precision_cfg(spec.cfg, spec.precision)
        decode = _single_decoder(spec.method, cfg, spec.n_cap, spec.start_token)
        valid_P = jnp.arange(max(spec.lengths)) < context_len
        return np.asarray(decode(jax.tree.map(jnp.asarray, trainable), _cast(base_params, cfg), valid_P))


@functools.lru_cache(maxsize=4)
def _single_decoder(method: Method, cfg: ModelConfig, n_new: int, start_token: int):
    def decode(trainable, frozen, valid_P):
        model, ctx = method.build(method.graphdef(cfg), trainable, frozen, RunData(valid_P), cfg)
        return greedy_generate(model, jnp.full((1, 1), start_token, jnp.int32), n_new, ctx)[0]

    return jax.jit(decode)


def _cast(base_params, cfg: ModelConfig):
    """The base's floating parameters in the config's dtype."""
    return jax.tree.map(lambda x: x.astype(cfg.jnp_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        base_params)
