"""The host side of training: chunks one after another, with callbacks between them (progress, resume saves).
The host syncs once per chunk (the chunk's losses)."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from prefixlab.processes import to_host


class ProgressBar:
    """A tqdm bar that advances per chunk and shows the last step's mean loss."""

    def __init__(self, steps: int, done: int, desc: str, enabled: bool):
        self.bar = tqdm(total=steps, initial=done, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True,
                        leave=False)

    def after_chunk(self, done, size, trainable, opt_state, losses, seconds):
        self.bar.update(size)
        self.bar.set_postfix(loss=f"{float(np.nanmean(losses[-1][..., -1])):.4f}")

    def close(self):
        self.bar.close()


class ResumeSaves:
    """Saves the training state to a `checkpoint.ChunkCheckpoint` between chunks, at most every `every_s` s, and
    on an interrupt (Ctrl-C, SIGTERM) the last completed chunk's state, unless that one is already saved."""

    def __init__(self, checkpoint, steps: int):
        self.checkpoint, self.steps, self.last = checkpoint, steps, time.perf_counter()
        self.saved = None  # steps done at the last save

    def after_chunk(self, done, size, trainable, opt_state, losses, seconds):
        if done < self.steps and time.perf_counter() - self.last >= self.checkpoint.every_s:
            self._save(done, trainable, opt_state, losses)

    def on_interrupt(self, done, trainable, opt_state, losses):
        if losses and done != self.saved:
            self._save(done, trainable, opt_state, losses)

    def _save(self, done, trainable, opt_state, losses):
        self.checkpoint.save(trainable, opt_state, done, np.concatenate(losses, axis=-1))  # atomic: checkpoint.save
        self.saved, self.last = done, time.perf_counter()


class ChunkTimes:
    """Collects each chunk's seconds into `into` (the first includes compilation)."""

    def __init__(self, into: list):
        self.into = into

    def after_chunk(self, done, size, trainable, opt_state, losses, seconds):
        self.into.append(seconds)


def chunk_sizes(steps: int, chunk: int) -> list[int]:
    full, rest = divmod(steps, chunk)
    return [chunk] * full + ([rest] if rest else [])


def train_chunks(chunk_fn: Callable, trainable, opt_state, inputs: tuple, steps: int, chunk: int, done: int = 0,
                 losses: list | None = None, callbacks=()):
    """Runs `chunk_fn(trainable, opt_state, *inputs, steps_U)` over steps done..steps in chunks of `chunk`.
    Returns (trainable, opt_state, losses (..., steps) as a host array).
    On KeyboardInterrupt (Ctrl-C; SIGTERM where the caller maps it so) each callback's `on_interrupt`, if it has
    one, gets the last completed chunk's state, then the interrupt goes on: a chunk cut off is not kept."""
    losses = list(losses or [])
    completed = (done, trainable, opt_state, tuple(losses))  # replaced in one assignment once a chunk is complete
    pending = None  # a dispatched chunk: (steps done after it, its outputs)
    try:
        for size in chunk_sizes(steps - done, chunk):
            t_chunk = time.perf_counter()
            new = chunk_fn(trainable, opt_state, *inputs, jnp.arange(done, done + size))
            pending = (done + size, new)
            losses_U = to_host(new[2])  # the one host sync per chunk
            completed, pending = (done + size, new[0], new[1], (*losses, losses_U)), None
            done, trainable, opt_state, losses = completed[0], completed[1], completed[2], list(completed[3])
            for cb in callbacks:
                cb.after_chunk(done, size, trainable, opt_state, losses, time.perf_counter() - t_chunk)
    except KeyboardInterrupt:
        if pending is not None:  # interrupted while waiting for a dispatched chunk: its inputs are donated, so
            completed = (pending[0], pending[1][0], pending[1][1], (*completed[3], to_host(pending[1][2])))  # finish it
        done, trainable, opt_state, kept = completed
        if any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves((trainable, opt_state))):
            raise  # interrupted while dispatching a chunk that donated them: only the last timed save remains
        for cb in callbacks:
            if hasattr(cb, "on_interrupt"):
                cb.on_interrupt(done, trainable, opt_state, list(kept))
        raise
    return trainable, opt_state, np.concatenate(losses, axis=-1)
