"""What every method promises, checked on the tiny model for any method class (tests/test_method_conformance.py runs
it over the registry; the guide's examples run it on theirs):

- init computes exactly the base where the method says so (`keeps_base_at_init`);
- `n_params` equals the size of what init returns, at every context length;
- after a random perturbation of its parameters, cached greedy decoding equals greedy recomputed by full forward
  passes, and teacher-forced exact match (validation) equals greedy decoding's (test);
- its record round-trips through JSON and passes the record schema;
- two of its groups that differ in a setting stay two rows of the summary (or the sweep refuses them).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab import record, results
from prefixlab import tasks as T
from prefixlab.config import preset
from prefixlab.decode import greedy_generate
from prefixlab.methods import RunData
from prefixlab.methods import settings as MS
from prefixlab.model import abstract_model
from prefixlab.train import init_params, run_keys, target_scores

CFG = preset("tiny", dropout=0.0)
TASK = T.parse_mixture("add1")
P, VALID = 3, 2  # a context padded to 3 slots, 2 of them valid (the mask is part of what decoding must respect)
N_SAMPLES = 32


@functools.lru_cache(maxsize=1)
def base_params():
    return jax.tree.map(lambda x: x[0], init_params(CFG, run_keys([0]))[1])


def _lengths(method):
    return (P, VALID) if method.uses_context else (0, 0)


def _perturbed(trainable, key):
    """Every float leaf moved by N(0, 0.1^2), every integer leaf (token ids) redrawn."""
    leaves, tree = jax.tree.flatten(trainable)
    keys = jax.random.split(key, max(len(leaves), 1))
    moved = [jax.random.randint(k, x.shape, 0, CFG.vocab_size, x.dtype) if jnp.issubdtype(x.dtype, jnp.integer)
             else x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(tree, moved)


def _outputs(method, trainable, base):
    """(greedy predictions, greedy recomputed by full forward passes, teacher-forced exact_B, valid_B, targets) on
    N_SAMPLES test samples; one compiled program per method."""
    padded, valid = _lengths(method)
    batch = TASK.batch(jax.random.key(20240101), N_SAMPLES, split="test")
    inputs_BN, targets_BN = batch.tokens_BT[:, :T.SEQ_LEN], batch.targets_BT[:, T.SEQ_LEN - 1:]

    @jax.jit
    def run(trainable, base):
        model, ctx = method.build(method.graphdef(CFG), trainable, base, RunData(jnp.arange(padded) < valid), CFG)
        preds_BN = greedy_generate(model, inputs_BN, T.SEQ_LEN, ctx)
        # greedy without a cache: the argmax of a full pass over the inputs and the predictions so far
        full_BT = jnp.concatenate([inputs_BN, preds_BN[:, :-1]], axis=1)
        recomputed_BN = model(full_BT, ctx, logits_from=T.SEQ_LEN - 1).argmax(-1)
        _, exact_B = target_scores(model, batch, ctx)
        return preds_BN, recomputed_BN, exact_B

    return (*run(trainable, base), batch.mask_BT[:, -1] > 0, targets_BN)


def check_init_and_count(method):
    base = base_params()
    padded, valid = _lengths(method)
    trainable = method.init(jax.random.key(1), CFG, base, padded)
    if method.keeps_base_at_init:
        tokens = TASK.batch(jax.random.key(3), 8).tokens_BT
        model, ctx = method.build(method.graphdef(CFG), trainable, base, RunData(jnp.arange(padded) < valid), CFG)
        # to float32 rounding, not bitwise: eager and compiled programs round differently on some CPUs
        np.testing.assert_allclose(model(tokens, ctx), nnx.merge(abstract_model(CFG)[0], base)(tokens), rtol=0,
                                   atol=1e-6, err_msg=f"{method.name}: init changes the base's outputs")
    for p in ((1, 2) if method.uses_context else (None,)):
        exact = method.init(jax.random.key(1), CFG, base, p or 0)
        size = sum(int(np.size(x)) for x in jax.tree.leaves(exact))
        assert method.n_params(CFG, p) == size, f"{method.name}: n_params {method.n_params(CFG, p)} != {size} at {p}"


def check_decoding(method):
    base = base_params()
    trainable = _perturbed(method.init(jax.random.key(1), CFG, base, _lengths(method)[0]), jax.random.key(2))
    preds, recomputed, exact_B, valid_B, targets = _outputs(method, trainable, base)
    differ = int((np.asarray(preds) != np.asarray(recomputed)).sum())
    assert differ == 0, f"{method.name}: cached greedy decoding differs from recomputed greedy in {differ} tokens"
    greedy_exact = (np.asarray(preds) == np.asarray(targets)).all(axis=1)
    np.testing.assert_array_equal(np.asarray(exact_B)[valid_B], greedy_exact[valid_B],
                                  err_msg=f"{method.name}: teacher-forced exact match differs from greedy's")


def _measured(seed: int, context_len) -> dict:
    return dict(seed=seed, context_len=context_len, lr=1e-3, trainable_params=7, exact_match=0.5, token_accuracy=0.75,
                wall_s=1.0, final_loss=0.1, val_loss=0.2, val_exact_match=0.5, steps_used=10, stop_reason="budget",
                status="ok", loss_curve=[0.3, 0.1])


def _record(method, seed, context_len):
    return record.build(_measured(seed, context_len), task=TASK.spec, group=f"{TASK.spec}/{method.tag}",
                        method=method, steps=10, pretrain="add1", pretrain_steps=20, model="tiny", variant="classic")


def variants(cls) -> list:
    """The method with one setting moved off its default, for each setting where a value is known to be valid."""
    out = []
    for f in MS.fields(cls):
        kind, is_tuple = MS.kind(cls, f.name)
        choices = f.metadata.get("choices")
        value = (next((c for c in choices if c != f.default), None) if choices else
                 (not f.default) if kind is bool and not is_tuple else
                 f.default + 1 if kind is int and not is_tuple else
                 f.default * 2 if kind is float and not is_tuple else None)
        if value is not None:
            out.append((f.name, cls(**{f.name: value})))
    return out


def check_records(cls):
    from prefixlab.sweep_config import SweepConfig, SweepError

    method = cls()
    r = _record(method, 0, 1 if method.uses_context else None)
    assert json.loads(json.dumps(r, allow_nan=False)) == r, f"{cls.name}: its record does not round-trip JSON"
    results.check_record(json.loads(json.dumps(r)), f"{cls.name} record", need_group=True)
    length = 1 if method.uses_context else None
    for name, other in variants(cls):
        if other.tag == method.tag:  # the sweep must refuse to mix them
            try:
                SweepConfig(model="tiny", methods=(cls.name,), settings={cls.name: {name: (getattr(method, name),
                                                                                          getattr(other, name))}})
            except SweepError:
                continue
            raise AssertionError(f"{cls.name}: groups with other {name} share tag {method.tag!r}; the sweep ran them")
        recs = [_record(m, s, length) for m in (method, other) for s in (0, 1)]
        rows = results.summarize(recs)
        assert len(rows) == 2 and [r["n_seeds"] for r in rows] == [2, 2], f"{cls.name}: {name} groups merge"
        assert len({results.method_label(r) for r in rows}) == 2, f"{cls.name}: {name} groups share a label"


def check_conformance(cls):
    """Every check above for method class `cls` (with its default settings)."""
    method = cls()
    check_init_and_count(method)
    check_decoding(method)
    check_records(cls)
    assert dataclasses.is_dataclass(cls)
