"""Forgetting, post hoc: how each tuned run of a finished sweep does on the base's pretraining tasks, from the run
directory's checkpoints alone (no retraining).

    rows = forgetting("runs/forgetting")          # one row per selected tuned run
    rows[0]["with_context"], rows[0]["without_context"], rows[0]["base"]   # {pretraining task: exact match}

Each tuned model is scored by greedy decoding on the same test samples as the sweep's own evaluation
(evaluate.make_evaluator: same seed, `eval_samples` of the sweep unless given), on every task of the base's
pretraining mixture. A context method is scored with its context and without it: without it the model is the
frozen base, so that column equals `base` by construction (the control). `spectrum=True` adds the weight diagnostics
of prefixlab/weight_spectrum.py to each row.

Exact match on a mixture task whose inputs carry no task indicator is forced down by any model that learned
another task on the same inputs: its first target token is that task's. So each row also holds the continuation
accuracy: teacher-forced token accuracy on the target tokens after the first, given the true earlier ones, which
name the task -- what the model still knows of a task once it is told which one (no conflict is forced there).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from prefixlab.analysis import load_run
from prefixlab.evaluate import EVAL_KEY_SEED, make_evaluator
from prefixlab.methods import METHODS
from prefixlab.record import label
from prefixlab.results import read_jsonl
from prefixlab.selection import selected
from prefixlab.tasks import FIRST_TARGET, choose_variant, parse_mixture, split_specs
from prefixlab.weight_spectrum import weight_spectrum


def _exact_match(models, ctxs, task, n: int) -> list[float]:
    """Exact match of each model (one graph) with its context (or none) on n test samples of `task` (a Mixture)."""
    graphdef = nnx.graphdef(models[0])
    states_R = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.split(m)[1] for m in models])
    ctx_R = None if ctxs is None else jax.tree.map(lambda *xs: jnp.stack(xs), *ctxs)
    build = lambda state, _, ctx: (nnx.merge(graphdef, state), ctx)
    evaluate = make_evaluator(build, task, n, cache_key=("forgetting", graphdef))
    exact_R, _ = evaluate(states_R, None, ctx_R)
    return [float(x) for x in np.asarray(exact_R)]


_CONTINUATION: dict = {}  # (graph, with a context) -> the compiled program


def _continuation_one(graphdef, state, ctx, tokens_BT, targets_BT, mask_BT):
    model = nnx.merge(graphdef, state)
    logits_BNV = model(tokens_BT, ctx, logits_from=FIRST_TARGET)
    right_BN = logits_BNV.argmax(-1) == targets_BT[:, FIRST_TARGET:]
    w_BN = mask_BT[:, FIRST_TARGET + 1:]  # the target tokens after the first
    return (right_BN[:, 1:] * w_BN).sum() / jnp.maximum(w_BN.sum(), 1.0)


def _continuation(models, ctxs, task, n: int) -> list[float]:
    """Teacher-forced token accuracy of each model on the target tokens after the first, n test samples of `task`
    (a Mixture; the samples of the final evaluation)."""
    graphdef = nnx.graphdef(models[0])
    key = (graphdef, ctxs is not None)
    if key not in _CONTINUATION:
        one = lambda state, ctx, *batch: _continuation_one(graphdef, state, ctx, *batch)
        _CONTINUATION[key] = jax.jit(jax.vmap(one, in_axes=(0, 0 if ctxs is not None else None, None, None, None)))
    states_R = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.split(m)[1] for m in models])
    ctx_R = None if ctxs is None else jax.tree.map(lambda *xs: jnp.stack(xs), *ctxs)
    batch = task.batch(jax.random.key(EVAL_KEY_SEED), n, split="test")
    acc_R = _CONTINUATION[key](states_R, ctx_R, batch.tokens_BT, batch.targets_BT, batch.mask_BT)
    return [float(x) for x in np.asarray(acc_R)]


def _setting_columns(record: dict) -> dict:
    """The method's own columns of a record (LoRA's rank, alpha, scaling; a prefix's init), as the sweep wrote them."""
    cls = METHODS.get(record["method"])
    names = [cls.columns.get(f, f) for f in getattr(cls, "__dataclass_fields__", {})] if cls else []
    return {k: record[k] for k in names if k in record}


def forgetting(run_dir, n: int | None = None, tasks=None, spectrum: bool = False, log=None) -> list[dict]:
    """One row per selected tuned run (learning rate chosen on validation) of the sweep in `run_dir`: its group,
    task, method and settings, seed, context length, lr, steps used, "exact_match" on its own task (the record's),
    and {task: exact match} on each of `tasks` (default: the pretraining mixture's) for "base" (the seed's base),
    "with_context" (the tuned model as it runs) and "without_context" (a context method's model with no context; None
    for a weight method). "other_tasks": the tasks other than the tuned one; "retained" / "base_retained": the mean
    exact match over them after / before tuning; "forgetting" = base_retained - retained. The same for the
    continuation accuracy (module docstring) under "continuation": {"base", "with_context", "without_context"} and
    "retained_continuation", "base_retained_continuation", "forgetting_continuation". spectrum: also
    "weights" (weight_spectrum rows), "intruders" (their sum over the blocks' weights) and "delta_rank" (the largest
    effective rank of dW among them). n: test samples (default: the sweep's eval_samples). Reads only."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    tasks = list(split_specs(run.config["pretrain"]) if tasks is None else tasks)
    if not tasks:
        raise ValueError(f"{run_dir}: no tasks to score forgetting on")
    n = int(n or run.config.get("eval_samples") or 800)
    sweep_tasks = run.config.get("tasks") or []
    variant = choose_variant([*split_specs(run.config["pretrain"]), *sweep_tasks, *tasks], run.config.get("variant"))
    mixes = {t: parse_mixture(t, variant) for t in tasks}
    say = log or (lambda *a, **k: None)
    records = [r for r in selected(read_jsonl(run_dir / "results.jsonl")) if r.get("status", "ok") == "ok"
               and r["seed"] in run.seeds]
    tuned = [r for r in records if METHODS.get(r["method"]) is not None and METHODS[r["method"]].training != "none"]
    base_models = [run.base_model(s) for s in run.seeds]
    base = {t: dict(zip(run.seeds, _exact_match(base_models, None, mixes[t], n))) for t in tasks}
    base_cont = {t: dict(zip(run.seeds, _continuation(base_models, None, mixes[t], n))) for t in tasks}
    by_group = defaultdict(list)
    for r in tuned:
        by_group[(r["group"], r.get("context_len"))].append(r)
    rows = []
    for (group, context_len), recs in by_group.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        say(f"forgetting: {group} (P = {context_len}), {len(recs)} seed(s)", flush=True)
        built = [run.model(r["task"], label(r), r["seed"], context_len=context_len, lr=r["lr"]) for r in recs]
        models = [m for m, _ in built]
        has_ctx = built[0][1] is not None
        ctxs = [c for _, c in built] if has_ctx else None
        with_ctx = {t: _exact_match(models, ctxs, mixes[t], n) for t in tasks}
        without = {t: _exact_match(models, None, mixes[t], n) for t in tasks} if has_ctx else None
        cont = {t: _continuation(models, ctxs, mixes[t], n) for t in tasks}
        cont_without = {t: _continuation(models, None, mixes[t], n) for t in tasks} if has_ctx else None
        for i, r in enumerate(recs):
            others = [t for t in tasks if t != r["task"]]
            row = {"group": group, "task": r["task"], "method": r["method"], **_setting_columns(r), "seed": r["seed"],
                   "context_len": context_len, "lr": r["lr"], "steps_used": r.get("steps_used"),
                   "exact_match": r["exact_match"], "other_tasks": others,
                   "base": {t: base[t][r["seed"]] for t in tasks},
                   "with_context": {t: with_ctx[t][i] for t in tasks},
                   "without_context": None if without is None else {t: without[t][i] for t in tasks}}
            row["retained"] = _mean(row["with_context"], others)
            row["base_retained"] = _mean(row["base"], others)
            row["forgetting"] = None if row["retained"] is None else row["base_retained"] - row["retained"]
            row["continuation"] = {"base": {t: base_cont[t][r["seed"]] for t in tasks},
                                   "with_context": {t: cont[t][i] for t in tasks},
                                   "without_context": None if cont_without is None else
                                   {t: cont_without[t][i] for t in tasks}}
            row["retained_continuation"] = _mean(row["continuation"]["with_context"], others)
            row["base_retained_continuation"] = _mean(row["continuation"]["base"], others)
            row["forgetting_continuation"] = (None if row["retained_continuation"] is None else
                                              row["base_retained_continuation"] - row["retained_continuation"])
            if spectrum:
                weights = weight_spectrum(run.base_model(r["seed"]), models[i])
                blocks = [w for w in weights if w["weight"] != "head"]
                row.update(weights=weights, intruders=sum(w["intruders"] for w in blocks),
                           delta_rank=max(w["delta_rank"] for w in blocks))
            rows.append(row)
    return rows


def _mean(scores: dict, tasks) -> float | None:
    return float(np.mean([scores[t] for t in tasks])) if tasks else None
