"""Tuning runs: one compiled program per (method, shape), vmapped over runs that share one frozen base.

A group is every (context length, learning rate) pair of one method on one task for one base seed; lengths are
padded to the longest and masked. Each run's key comes from (seed, method, task, length, lr) through CRC32, so a
run's result does not depend on which other runs share its group (up to float rounding where runs are computed side
by side: see run_layout.CPU_RUN_BATCH).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from prefixlab.config import ModelConfig
from prefixlab.evaluate import DEFAULT_EVAL_SAMPLES, DEFAULT_VAL_SAMPLES, make_evaluator, make_validator
from prefixlab.methods import Method, RunData
from prefixlab.record import Measured
from prefixlab.results import loss_curve
from prefixlab.stopping import STOP_REASONS, EarlyStopping, StopRule
from prefixlab.tasks import Mixture
from prefixlab.train import OptimConfig, final_loss, lm_loss, make_optimizer, run_training


@dataclasses.dataclass(frozen=True)
class RunSpec:
    context_len: int | None
    lr: float


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """How a group tunes and is scored: everything but its runs, seeds and bases. stop_rule: train to convergence
    within the `steps` budget, scoring on `val_samples` validation inputs after every chunk (prefixlab/stopping.py);
    None: exactly `steps` steps. cross_tasks: other tasks each tuned run is also scored on."""

    method: Method
    cfg: ModelConfig
    task: Mixture
    steps: int
    batch_size: int = 64
    optim: OptimConfig = OptimConfig(weight_decay=0.0)
    chunk: int = 250
    stop_rule: StopRule | None = None
    val_samples: int = DEFAULT_VAL_SAMPLES
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    cross_tasks: tuple[Mixture, ...] = ()


def run_key(seed: int, method: Method, task_spec: str, context_len, lr) -> jax.Array:
    tag = f"{method.key_tag}|{task_spec}|{context_len}|{lr!r}"
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(tag.encode()))


def group_runs(method: Method, lengths, lrs) -> list[RunSpec]:
    lens = lengths if method.uses_context else [None]
    return [RunSpec(p, lr) for p, lr in itertools.product(lens, lrs)]


def _run_data(runs: list[RunSpec], P: int) -> RunData:
    lens = np.array([r.context_len or 0 for r in runs])
    return RunData(jnp.asarray(np.arange(P)[None, :] < lens[:, None]))


def tune_group(spec: TuneSpec, base_E, runs: list[RunSpec], seeds: list[int], *, progress: bool = True,
               resume=None, label: str = "") -> tuple[list[Measured], object, np.ndarray]:
    """Tunes every run of a group on each seed's frozen base (`base_E`: base parameters stacked over seeds),
    all in one program, then evaluates. Returns (measured, trainable_ER, losses_ERU): one `record.Measured` per
    (seed, run): status "diverged" when the loss went NaN/inf (its accuracies are then None); val_loss and
    val_exact_match of the parameters handed back, steps_used and stop_reason; with a stop_rule a trained run also
    gets val_curve (every validation up to its stop); with cross_tasks, cross_exact_match {task: exact match}.
    The method says how it trains (`Method.training`): by gradient, by its own search, or not at all.
    resume: a `checkpoint.ChunkCheckpoint` for the training state (see `train.run_training`).
    label: put before the progress bars' descriptions (the sweep's "[k/N] ")."""
    method, cfg, task, steps = spec.method, spec.cfg, spec.task, spec.steps
    E, R = len(seeds), len(runs)
    P = max((r.context_len or 0) for r in runs)
    graphdef = method.graphdef(cfg)
    keys_ER = jnp.stack([jnp.stack([run_key(s, method, task.spec, r.context_len, r.lr) for r in runs])
                         for s in seeds])
    init_keys_ER = jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, 0)))(keys_ER)
    train_keys_ER = jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, 1)))(keys_ER)
    run_data_R = _run_data(runs, P)
    run_data_ER = jax.tree.map(lambda x: jnp.broadcast_to(x, (E, *x.shape)), run_data_R)
    build = lambda tr, fr, rd: method.build(graphdef, tr, fr, rd, cfg)

    def loss_on(trainable, frozen, run_data, key, n=spec.batch_size):
        model, ctx = build(trainable, frozen, run_data)
        return lm_loss(model, task.batch(key, n), ctx, None)  # dropout off while tuning

    init_runs = jax.vmap(lambda base, k: method.init(k, cfg, base, P), in_axes=(None, 0))
    trainable_ER = jax.jit(jax.vmap(init_runs))(base_E, init_keys_ER)
    validate = make_validator(build, task, spec.val_samples, per_base=True, cache_key=(method, cfg))
    stopping = EarlyStopping(spec.stop_rule, validate) if spec.stop_rule is not None else None
    trained = method.training == "gradient"
    if method.training == "search":
        start = time.perf_counter()
        trainable_ER, losses_ERU = method.search(loss_on, base_E, runs, train_keys_ER, cfg)
        wall = time.perf_counter() - start
    elif not trained:
        losses_ERU, wall = np.zeros((E, R, 0), np.float32), 0.0  # nothing trains
    else:
        lr_ER = jnp.array([[r.lr for r in runs]] * E)
        trainable_ER, losses_ERU, wall = run_training(
            loss_on, trainable_ER, base_E, run_data_ER, lr_ER, make_optimizer(spec.optim), train_keys_ER, steps,
            spec.chunk, desc=f"{label}{method.name} {task.spec} ({E * R} runs)", progress=progress, per_base=True,
            resume=resume, stopping=stopping,
        )
    if trained and stopping is not None:
        steps_ER, reason_ER = stopping.stop_step, np.asarray(STOP_REASONS)[stopping.reason]
    else:
        steps_ER = np.full((E, R), losses_ERU.shape[-1] if trained else 0)
        reason_ER = np.full((E, R), "budget" if trained else "untrained")
    val_loss_ER, val_exact_ER = (np.asarray(x) for x in jax.device_get(validate(trainable_ER, base_E, run_data_ER)))
    evaluate = lambda t: jax.device_get(make_evaluator(build, t, spec.eval_samples, per_base=True,
                                                       cache_key=(method, cfg))(trainable_ER, base_E, run_data_ER))
    with tqdm(total=1 + len(spec.cross_tasks), desc=f"{label}evaluate {task.spec}", unit="task", leave=False,
              disable=not progress, dynamic_ncols=True) as bar:
        exact_ER, tok_ER = evaluate(task)
        bar.update()
        cross = {}
        for t in spec.cross_tasks:
            bar.set_postfix_str(f"on {t.spec}")
            cross[t.spec] = evaluate(t)[0]
            bar.update()
    records = []
    for si, seed in enumerate(seeds):
        for ri, r in enumerate(runs):
            used = losses_ERU[si, ri, :steps_ER[si, ri]] if trained else losses_ERU[si, ri]  # to its stop
            bad = not np.isfinite(losses_ERU[si, ri]).all()
            acc = lambda x: None if bad or not np.isfinite(x) else float(x)
            fl = float(final_loss(used)) if used.size else math.nan
            rec = dict(seed=seed, context_len=r.context_len, lr=r.lr, exact_match=acc(exact_ER[si, ri]),
                       token_accuracy=acc(tok_ER[si, ri]), final_loss=fl if math.isfinite(fl) else None,
                       val_loss=acc(val_loss_ER[si, ri]), val_exact_match=acc(val_exact_ER[si, ri]),
                       steps_used=int(steps_ER[si, ri]), stop_reason=str(reason_ER[si, ri]),
                       trainable_params=method.n_params(cfg, r.context_len), wall_s=wall / (E * R),
                       status="diverged" if bad else "ok", loss_curve=loss_curve(used))
            if trained and stopping is not None:
                rec["val_curve"] = stopping.curve((si, ri))
                rec["loss_falling_at_stop"] = bool(stopping.falling_at_stop[si, ri])
            if cross:
                rec["cross_exact_match"] = {t: acc(em[si, ri]) for t, em in cross.items()}
            records.append(rec)
    return records, trainable_ER, losses_ERU
