"""Training to convergence within a step budget: validation between chunks, per-run stops masked in the program.

After every chunk each run is scored on the validation split (`evaluate.make_validator`). A run stops when its
validation exact match reaches 100 % ("solved"), when its validation loss has not improved by `tol` over
`patience` evaluations in a row ("plateau"), or when the loss is not finite ("diverged"); otherwise it trains to
the budget ("budget"). Learning curves can sit on a plateau for thousands of steps before a late drop (the
reference's LoRA on double_hist: ~4,000 steps, then a drop at 5-6k), so a rule can be made transition-safe: no
plateau stop before `min_fraction` of the budget, a patience that grows with the evaluations done
(`patience_growth`), and none while the training loss is still falling beyond its noise (`trend`).
A stopped run's learning rate is 0 from then on, so its parameters stay fixed while the
rest of its program trains on; the program ends once every run has stopped. Each run hands back its best
parameters (the lowest validation loss seen, or those that solved the split). Every evaluation is kept
(`curve`): the validation learning curve of each run, for plots of a claim against tuning steps.

Shape letters: R the run axes of the program (E x R when per base), as in prefixlab/config.py.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.processes import to_host

STOP_REASONS = ("budget", "solved", "plateau", "diverged")


@dataclasses.dataclass(frozen=True)
class StopRule:
    """patience: evaluations without an improvement of at least `tol` (nats of validation loss) before a run
    stops on a plateau. The other fields guard against stopping right before a delayed transition; their defaults
    here are off (the rule as it was first written); SweepConfig turns them on:
      min_fraction     no plateau stop before this fraction of the budget's evaluations;
      patience_growth  the patience is at least this fraction of the evaluations done so far;
      trend            no plateau stop while the training loss (mean per chunk) over the patience window (at least
                       3 chunks) falls by more than `tol` and by more than twice its standard error (a least-squares
                       slope)."""

    patience: int = 4
    tol: float = 1e-3
    min_fraction: float = 0.0
    patience_growth: float = 0.0
    trend: bool = False

    def __post_init__(self):
        if self.patience < 1 or not self.tol >= 0:
            raise ValueError(f"stopping needs patience >= 1 and tol >= 0, got {self.patience}, {self.tol}")
        if not (0.0 <= self.min_fraction <= 1.0 and 0.0 <= self.patience_growth <= 1.0):
            raise ValueError(f"stopping needs min_fraction and patience_growth in [0, 1], got {self.min_fraction}, "
                             f"{self.patience_growth}")

    def key(self) -> dict:
        """The fields that name this rule in cache keys: the guards only when on, so a key made before they
        existed still names the same rule."""
        out = {"patience": self.patience, "tol": self.tol}
        guards = {"min_fraction": self.min_fraction, "patience_growth": self.patience_growth, "trend": self.trend}
        return {**out, **{k: v for k, v in guards.items() if v}}

    def patience_at(self, evals_done: int) -> int:
        return max(self.patience, math.ceil(self.patience_growth * evals_done))


# The sweep's default rule: no plateau stop in the first 60 % of the budget (the reference's LoRA drops at 50-60 %
# of its 10,000 steps), a patience of at least a quarter of the evaluations done, and none while the training loss
# still falls. It saves at most 40 % of a budget, where the first rule saved up to 90 %.
TRANSITION_SAFE = StopRule(patience=4, tol=1e-3, min_fraction=0.6, patience_growth=0.25, trend=True)


def falling(train_K: np.ndarray, tol: float) -> np.ndarray:
    """Per run: is the training loss (K chunk means, axis 0) still falling beyond its noise? Its least-squares
    slope times the window is below -tol and below -2 standard errors. Fewer than 3 finite points: False."""
    K = train_K.shape[0]
    if K < 3:
        return np.zeros(train_K.shape[1:], bool)
    x = np.arange(K, dtype=np.float64) - (K - 1) / 2
    y = train_K.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.tensordot(x, y - y.mean(0), axes=(0, 0)) / (x @ x)
        resid = y - y.mean(0) - slope * x.reshape((K,) + (1,) * (y.ndim - 1))
        se = np.sqrt((resid**2).sum(0) / (K - 2) / (x @ x))
        drop = -slope * (K - 1)
        return np.isfinite(drop) & (drop > tol) & (drop > 2 * se * (K - 1))


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
        self.curve_train = np.full((n_evals, *run_shape), np.nan, np.float32)  # mean training loss per chunk
        self.falling_now = np.zeros(run_shape, np.int32)  # 1: the training loss is falling (last evaluation)
        self.falling_at_stop = np.zeros(run_shape, np.int32)  # the same, at each run's stop

    @property
    def all_stopped(self) -> bool:
        return not self.active.any()

    def gate(self, inputs: tuple) -> tuple:
        """(frozen, run_data, lr, key) with the learning rate of stopped runs set to 0."""
        frozen, run_data, lr, key = inputs
        return frozen, run_data, self.shard(lr * jnp.asarray(self.active, lr.dtype)), key

    def after_chunk(self, done: int, trainable, train_losses=None) -> None:
        """train_losses: the chunk's training losses (run axes..., steps), for the rule's trend guard."""
        scores = self.validate(*self.gather((trainable, self.frozen, self.run_data)))
        loss, exact = (np.asarray(x, np.float32) for x in to_host(scores))
        self.evaluated_at = done
        k = int((self.curve_step >= 0).sum())
        if k < len(self.curve_step):
            self.curve_step[k], self.curve_loss[k], self.curve_exact[k] = done, loss, exact
            if train_losses is not None and np.shape(train_losses)[:-1] == self.active.shape:
                with np.errstate(invalid="ignore"):
                    self.curve_train[k] = np.nanmean(np.asarray(train_losses, np.float32), axis=-1)
        rule, evals_done = self.rule, min(k + 1, len(self.curve_step))
        window = rule.patience_at(evals_done)
        still_falling = falling(self.curve_train[max(0, evals_done - max(window, 3)):evals_done], rule.tol)
        live = self.active
        diverged = live & ~np.isfinite(loss)
        solved = live & ~diverged & (exact >= 1.0)
        improved = live & ~diverged & (loss < self.best_loss - self.rule.tol)
        keep = solved | improved
        self.best = _where_runs(keep, trainable, self.best)
        self.best_loss = np.where(improved, loss, self.best_loss)
        self.since = np.where(keep, 0, np.where(live, self.since + 1, self.since))
        plateau = live & ~keep & ~diverged & (self.since >= window)
        if rule.trend:
            plateau &= ~still_falling
        if evals_done < rule.min_fraction * len(self.curve_step):
            plateau &= False
        for code, hit in ((1, solved), (2, plateau), (3, diverged)):
            self.reason = np.where(hit, code, self.reason)
        stopped = solved | plateau | diverged
        self.stop_step = np.where(stopped, done, self.stop_step)
        self.falling_at_stop = np.where(stopped, still_falling, self.falling_at_stop).astype(np.int32)
        self.falling_now = np.where(live, still_falling, self.falling_now).astype(np.int32)
        self.active = live & ~stopped

    def finish(self, done: int):
        """Runs still going trained the whole budget (`done` steps). Returns the best parameters."""
        self.stop_step = np.where(self.active, done, self.stop_step)
        self.falling_at_stop = np.where(self.active, self.falling_now, self.falling_at_stop).astype(np.int32)
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


_ARRAYS = ("active", "best_loss", "since", "stop_step", "reason", "curve_step", "curve_loss", "curve_exact",
           "curve_train", "falling_now", "falling_at_stop")
RUN_AXIS_OFFSET = {"curve_loss": 1, "curve_exact": 1, "curve_train": 1}  # arrays whose run axes come after the evaluation axis
