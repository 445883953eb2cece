"""The host side of training: chunks one after another, with callbacks between them (progress, resume saves).
The host syncs once per chunk (the chunk's losses)."""

from __future__ import annotations

import time
from typing import Callable

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
    """Saves the training state to a `checkpoint.ChunkCheckpoint` between chunks, at most every `every_s` s."""

    def __init__(self, checkpoint, steps: int):
        self.checkpoint, self.steps, self.last = checkpoint, steps, time.perf_counter()

    def after_chunk(self, done, size, trainable, opt_state, losses, seconds):
        if done < self.steps and time.perf_counter() - self.last >= self.checkpoint.every_s:
            self.checkpoint.save(trainable, opt_state, done, np.concatenate(losses, axis=-1))
            self.last = time.perf_counter()


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
    Returns (trainable, opt_state, losses (..., steps) as a host array)."""
    losses = list(losses or [])
    for size in chunk_sizes(steps - done, chunk):
        t_chunk = time.perf_counter()
        trainable, opt_state, losses_U = chunk_fn(trainable, opt_state, *inputs, jnp.arange(done, done + size))
        losses.append(to_host(losses_U))  # the one host sync per chunk
        done += size
        for cb in callbacks:
            cb.after_chunk(done, size, trainable, opt_state, losses, time.perf_counter() - t_chunk)
    return trainable, opt_state, np.concatenate(losses, axis=-1)
