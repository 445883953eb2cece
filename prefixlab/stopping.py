"""Training to convergence within a step budget: validation between chunks, per-run stops masked in the program.

After every chunk each run is scored on the validation split (`evaluate.make_validator`). A run stops when its
validation exact match reaches 100 % ("solved"), when its validation loss has not improved by `tol` over
`patience` evaluations in a row ("plateau"), or when the loss is not finite ("diverged"); otherwise it trains to
the budget ("budget"). A stopped run's learning rate is 0 from then on, so its parameters stay fixed while the
rest of its program trains on; the program ends once every run has stopped. Each run hands back its best
parameters (the lowest validation loss seen, or those that solved the split). Every evaluation is kept
(`curve`): the validation learning curve of each run, for plots of a claim against tuning steps.

Shape letters: R the run axes of the program (E x R when per base), as in prefixlab/config.py.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.processes import to_host

STOP_REASONS = ("budget", "solved", "plateau", "diverged")


@dataclasses.dataclass(frozen=True)
class StopRule:
    """patience: evaluations without an improvement of at least `tol` (nats of validation loss) before a run
    stops."""

    patience: int = 4
    tol: float = 1e-3

    def __post_init__(self):
        if self.patience < 1 or not self.tol >= 0:
            raise ValueError(f"stopping needs patience >= 1 and tol >= 0, got {self.patience}, {self.tol}")


def _where_runs(mask_R, new, old):
    """Per run, `new`'s parameters where mask_R, else `old`'s (mask over the leading run axes)."""
    def pick(n, o):
        m = jnp.asarray(mask_R).reshape(mask_R.shape + (1,) * (n.ndim - mask_R.ndim))
        return jnp.where(m, n, o)
    return jax.tree.map(pick, new, old)


class EarlyStopping:
    """The host-side state of the rule for every run of one program. `validate(trainable, frozen, run_data) ->
    (loss_R, exact_R)`. `train.run_training(stopping=...)` calls start, gate before each chunk, after_chunk after
    each, and finish at the end; then `stop_step` (steps each run trained) and `reason` (STOP_REASONS) per run."""

    def __init__(self, rule: StopRule, validate: Callable):
        self.rule, self.validate = rule, validate

    def start(self, trainable, frozen, run_data, run_shape: tuple, shard: Callable = lambda t: t,
              gather: Callable = lambda t: t, n_evals: int = 0):
        """run_shape: the program's run axes ((R,) or (E, R), padding included); shard places an lr-shaped array;
        gather brings the program's arrays to where `validate` runs (host arrays, from a mesh); n_evals: the most
        evaluations the budget allows (chunks), the length of the kept curve (fixed, so a resume restores it)."""
        self.frozen, self.run_data, self.shard, self.gather = frozen, run_data, shard, gather
        self.best = jax.tree.map(jnp.copy, trainable)  # chunks donate the trainable state: keep a copy
        self.evaluated_at = -1
        self.active = np.ones(run_shape, bool)
        self.best_loss = np.full(run_shape, np.inf, np.float32)
        self.since = np.zeros(run_shape, np.int32)
        self.stop_step = np.full(run_shape, -1, np.int32)
        self.reason = np.zeros(run_shape, np.int32)
        self.curve_step = np.full((n_evals,), -1, np.int32)  # K: the evaluations; -1 = not reached
        self.curve_loss = np.full((n_evals, *run_shape), np.nan, np.float32)
        self.curve_exact = np.full((n_evals, *run_shape), np.nan, np.float32)

    @property
    def all_stopped(self) -> bool:
        return not self.active.any()

    def gate(self, inputs: tuple) -> tuple:
        """(frozen, run_data, lr, key) with the learning rate of stopped runs set to 0."""
        frozen, run_data, lr, key = inputs
        return frozen, run_data, self.shard(lr * jnp.asarray(self.active, lr.dtype)), key

    def after_chunk(self, done: int, trainable) -> None:
        scores = self.validate(*self.gather((trainable, self.frozen, self.run_data)))
        loss, exact = (np.asarray(x, np.float32) for x in to_host(scores))
        self.evaluated_at = done
        k = int((self.curve_step >= 0).sum())
        if k < len(self.curve_step):
            self.curve_step[k], self.curve_loss[k], self.curve_exact[k] = done, loss, exact
        live = self.active
        diverged = live & ~np.isfinite(loss)
        solved = live & ~diverged & (exact >= 1.0)
        improved = live & ~diverged & (loss < self.best_loss - self.rule.tol)
        keep = solved | improved
        self.best = _where_runs(keep, trainable, self.best)
        self.best_loss = np.where(improved, loss, self.best_loss)
        self.since = np.where(keep, 0, np.where(live, self.since + 1, self.since))
        plateau = live & ~keep & ~diverged & (self.since >= self.rule.patience)
        for code, hit in ((1, solved), (2, plateau), (3, diverged)):
            self.reason = np.where(hit, code, self.reason)
        stopped = solved | plateau | diverged
        self.stop_step = np.where(stopped, done, self.stop_step)
        self.active = live & ~stopped

    def finish(self, done: int):
        """Runs still going trained the whole budget (`done` steps). Returns the best parameters."""
        self.stop_step = np.where(self.active, done, self.stop_step)
        return self.best

    def curve(self, index: tuple) -> dict:
        """One run's validation curve up to its stop: {"step": [...], "loss": [...], "exact_match": [...]}."""
        keep = (self.curve_step >= 0) & (self.curve_step <= self.stop_step[index])
        as_list = lambda a: [None if not np.isfinite(v) else round(float(v), 6) for v in a]
        return {"step": self.curve_step[keep].tolist(), "loss": as_list(self.curve_loss[(keep, *index)]),
                "exact_match": as_list(self.curve_exact[(keep, *index)])}

    # resume: the state saved beside the training state, so a continued run stops where an unbroken one would
    def state(self) -> dict:
        arrays = {k: np.asarray(getattr(self, k), np.int32 if k == "active" else None) for k in _ARRAYS}
        return {"best": self.best, **arrays, "evaluated_at": np.asarray(self.evaluated_at, np.int32)}

    def load_state(self, state: dict) -> None:
        self.best = state["best"]
        for k in _ARRAYS:
            setattr(self, k, np.asarray(state[k]))
        self.active = self.active.astype(bool)
        self.evaluated_at = int(state["evaluated_at"])


_ARRAYS = ("active", "best_loss", "since", "stop_step", "reason", "curve_step", "curve_loss", "curve_exact")
RUN_AXIS_OFFSET = {"curve_loss": 1, "curve_exact": 1}  # arrays whose run axes come after the evaluation axis
