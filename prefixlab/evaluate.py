"""Scoring a model: on a task's test split, exact match and per-token accuracy of its greedy completions (the final
evaluation); on its validation split, loss and exact match by teacher forcing (selection and stopping)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.decode import greedy_generate
from prefixlab.tasks import SEQ_LEN, Mixture
from prefixlab.train import target_scores

EVAL_KEY_SEED = 20240101  # one fixed test sample set for every method and run
DEFAULT_EVAL_SAMPLES = 3200
VAL_KEY_SEED = 20240102  # one fixed validation set
DEFAULT_VAL_SAMPLES = 512
EVAL_BATCH = 800  # test samples decoded at a time (memory grows with it, not with the samples)


def sample_test_split(mixture: Mixture, n: int, seed: int = EVAL_KEY_SEED):
    """n test-split samples: (inputs_BN, targets_BN, valid_B)."""
    b = mixture.batch(jax.random.key(seed), n, split="test")
    return b.tokens_BT[:, :SEQ_LEN], b.targets_BT[:, SEQ_LEN - 1 :], b.mask_BT[:, -1] > 0


def score(preds_BN, targets_BN, valid_B):
    """(exact match, token accuracy) over the valid samples."""
    w_B = valid_B.astype(jnp.float32)
    n = jnp.maximum(w_B.sum(), 1.0)
    correct_BN = preds_BN == targets_BN
    return (correct_BN.all(axis=1) * w_B).sum() / n, (correct_BN.mean(axis=1) * w_B).sum() / n


def make_evaluator(build, mixture: Mixture, n: int = DEFAULT_EVAL_SAMPLES, batch: int = EVAL_BATCH,
                   seed: int = EVAL_KEY_SEED, per_base: bool = False, cache_key=None):
    """A fn(trainable_R, frozen, run_data_R) -> (exact_R, token_acc_R) on the same n test samples for every
    run. `build(trainable, frozen, run_data) -> (model, context)` assembles one run (see `Method.build`);
    `frozen` is shared by all runs (per_base: one per leading base axis, as in `run_training`).
    Samples are decoded in batches of `batch` (lax.map) to bound memory. The test set is an argument of the
    compiled program, so evaluators made with the same hashable `cache_key` (say the method and model config)
    share one compilation across tasks."""
    inputs, targets, valid = sample_test_split(mixture, n, seed)
    batch = min(batch, n)
    pad = (-n) % batch
    if pad:  # pad to whole batches; padded rows count as invalid
        inputs = jnp.concatenate([inputs, jnp.zeros((pad, SEQ_LEN), inputs.dtype)])
        targets = jnp.concatenate([targets, jnp.zeros((pad, SEQ_LEN), targets.dtype)])
        valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)])
    inputs_GBN = inputs.reshape(-1, batch, SEQ_LEN)
    program = _program("greedy", _greedy_run, build, per_base, cache_key)
    return lambda trainable_R, frozen, run_data_R: program(trainable_R, frozen, run_data_R, inputs_GBN, targets, valid)


def _greedy_run(build, trainable, frozen, run_data, inputs_GBN, targets, valid):
    model, ctx = build(trainable, frozen, run_data)
    preds = jax.lax.map(lambda x: greedy_generate(model, x, SEQ_LEN, ctx), inputs_GBN)
    return score(preds.reshape(-1, SEQ_LEN), targets, valid)


def _teacher_forced_run(build, trainable, frozen, run_data, batch, valid_B):
    model, ctx = build(trainable, frozen, run_data)
    loss, exact_B = target_scores(model, batch, ctx)
    return loss, (exact_B & valid_B).sum() / jnp.maximum(valid_B.sum(), 1)


_PROGRAMS: dict = {}


def _program(kind: str, one_run, build, per_base: bool, cache_key=None):
    """jit(vmap over runs (and bases)) of one_run(build, trainable, frozen, run_data, *data); the data (samples)
    are arguments, so programs made with the same hashable cache_key share one compilation across tasks."""
    def compile_():
        run = lambda trainable, frozen, run_data, *data: one_run(build, trainable, frozen, run_data, *data)
        over_runs = lambda *a: jax.vmap(run, in_axes=(0, None, 0) + (None,) * (len(a) - 3))(*a)
        over_bases = lambda *a: jax.vmap(over_runs, in_axes=(0, 0, 0) + (None,) * (len(a) - 3))(*a)
        return jax.jit(over_bases if per_base else over_runs)

    if cache_key is None:
        return compile_()
    key = (kind, cache_key, per_base)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = compile_()
    return _PROGRAMS[key]


def make_validator(build, mixture: Mixture, n: int = DEFAULT_VAL_SAMPLES, per_base: bool = False,
                   seed: int = VAL_KEY_SEED, cache_key=None):
    """A jitted fn(trainable_R, frozen, run_data_R) -> (loss_R, exact_R) on the same n validation-split samples for
    every run, by teacher forcing: one forward pass (exact match as greedy decoding would score it, see
    `train.target_scores`). Arguments as for `make_evaluator`."""
    batch = mixture.batch(jax.random.key(seed), n, split="val")
    valid_B = batch.mask_BT[:, -1] > 0
    program = _program("teacher-forced", _teacher_forced_run, build, per_base, cache_key)
    return lambda trainable_R, frozen, run_data_R: program(trainable_R, frozen, run_data_R, batch, valid_B)


def base_builder(graphdef):
    """`build` for plain models (no context): the trainable state is the whole model."""
    return lambda trainable, frozen, run_data: (nnx.merge(graphdef, trainable), None)
