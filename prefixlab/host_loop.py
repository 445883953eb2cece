"""The host side of training: chunks one after another, with callbacks between them (progress, resume saves).
The host syncs once per chunk (the chunk's losses)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from prefixlab.processes import to_host


TICK_EVERY = 10  # steps between progress ticks
_CURRENT_BAR = [None]  # the bar of the training now running


def progress_tick(step):
    """The progress callback compiled into training programs: one function for all of them, so a cached program
    reports to whichever bar is current."""
    if _CURRENT_BAR[0] is not None:
        _CURRENT_BAR[0].tick(step)


class ProgressBar:
    """A tqdm bar that advances every few steps, from the program's own ticks (`one_run_chunk(tick=progress_tick)`:
    no extra host sync), is set exactly after each chunk, shows the last step's mean loss, and says when it is
    compiling. ticks_per_step: the program's tick calls per step of a chunk (RunLayout.passes /
    TICK_EVERY). The newest bar gets the ticks until it is closed."""

    def __init__(self, steps: int, done: int, desc: str, enabled: bool, ticks_per_step: float = 0.0):
        self.bar = tqdm(total=steps, initial=done, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True,
                        leave=False)
        self.ticks_per_step, self.compiling = ticks_per_step, enabled
        self.base, self.size, self.ticks = done, 0, 0
        if enabled:
            self.bar.set_postfix_str("compiling")
            _CURRENT_BAR[0] = self

    def before_chunk(self, done, size):
        self.base, self.size, self.ticks = done, size, 0

    def tick(self, _step):
        """From the program's callback thread, while the host waits for the chunk."""
        self.ticks += 1
        if self.compiling:
            self.compiling = False
            self.bar.set_postfix_str("training")
        if self.ticks_per_step:
            at = self.base + min(self.size, int(self.ticks / self.ticks_per_step))
            if at > self.bar.n:
                self.bar.update(at - self.bar.n)

    def after_chunk(self, done, size, trainable, opt_state, losses, seconds):
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix(loss=f"{float(np.nanmean(losses[-1][..., -1])):.4f}")

    def close(self):
        if _CURRENT_BAR[0] is self:
            jax.effects_barrier()  # the last ticks reach this bar, not the next one
            _CURRENT_BAR[0] = None
        self.bar.close()


class ResumeSaves:
    """Saves the training state to a `checkpoint.ChunkCheckpoint` between chunks, at most every `every_s` s, and
    on an interrupt (Ctrl-C, SIGTERM) the last completed chunk's state, unless that one is already saved."""

    def __init__(self, checkpoint, steps: int, stopping=None):
        self.checkpoint, self.steps, self.last = checkpoint, steps, time.perf_counter()
        self.stopping = stopping  # a stopping.EarlyStopping whose state is saved too
        self.saved = None  # steps done at the last save

    def after_chunk(self, done, size, trainable, opt_state, losses, seconds):
        finished = done >= self.steps or (self.stopping is not None and self.stopping.all_stopped)
        if not finished and time.perf_counter() - self.last >= self.checkpoint.every_s:
            self._save(done, trainable, opt_state, losses)

    def on_interrupt(self, done, trainable, opt_state, losses):
        if losses and done != self.saved:
            self._save(done, trainable, opt_state, losses)

    def _save(self, done, trainable, opt_state, losses):
        extra = self.stopping.state() if self.stopping is not None else None
        self.checkpoint.save(trainable, opt_state, done, np.concatenate(losses, axis=-1), extra)  # atomic
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


@contextlib.contextmanager
def interrupts_held():
    """Holds Ctrl-C (and SIGTERM where it is mapped to it) until the block ends. A chunk's dispatch donates the old
    state before it returns the new one: an interrupt in between would leave no state to save."""
    held = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is signal.default_int_handler]
    if not held or threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    for sig in held:
        signal.signal(sig, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, signal.default_int_handler)
        if got:
            raise KeyboardInterrupt


def train_chunks(chunk_fn: Callable, trainable, opt_state, inputs: tuple, steps: int, chunk: int, done: int = 0,
                 losses: list | None = None, callbacks=(), stopping=None):
    """Runs `chunk_fn(trainable, opt_state, *inputs, steps_U)` over steps done..steps in chunks of `chunk`.
    Returns (trainable, opt_state, losses (..., steps done) as a host array).
    stopping: a `stopping.EarlyStopping` (started): it scores the runs after every chunk, before the callbacks,
    masks stopped runs' learning rates in the next, and ends the loop once every run has stopped.
    On KeyboardInterrupt (Ctrl-C; SIGTERM where the caller maps it so) each callback's `on_interrupt`, if it has
    one, gets the state of every dispatched chunk (one the host was waiting for is finished first, since its inputs
    are donated), then the interrupt goes on."""
    losses = list(losses or [])
    start, given = done, len(losses)
    try:
        for size in chunk_sizes(steps - done, chunk):
            if stopping is not None and stopping.all_stopped:
                break
            t_chunk = time.perf_counter()
            for cb in callbacks:
                getattr(cb, "before_chunk", lambda *_: None)(done, size)
            gated = inputs if stopping is None else stopping.gate(inputs)
            with interrupts_held():
                trainable, opt_state, losses_U = chunk_fn(trainable, opt_state, *gated, jnp.arange(done, done + size))
                losses.append(losses_U)  # from here the state includes this chunk
            losses[-1] = to_host(losses_U)  # the one host sync per chunk
            done += size
            if stopping is not None:
                stopping.after_chunk(done, trainable, losses[-1])
            for cb in callbacks:
                cb.after_chunk(done, size, trainable, opt_state, losses, time.perf_counter() - t_chunk)
    except KeyboardInterrupt:
        savers = [cb for cb in callbacks if hasattr(cb, "on_interrupt")]
        if not savers or any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves((trainable, opt_state))):
            raise  # nothing to save, or interrupted while dispatching a chunk that donated them
        losses = [to_host(x) for x in losses]
        done = start + sum(x.shape[-1] for x in losses[given:])
        if stopping is not None and stopping.evaluated_at != done:
            stopping.after_chunk(done, trainable, losses[-1])  # as an unbroken run would have, before saving
        for cb in savers:
            cb.on_interrupt(done, trainable, opt_state, losses)
        raise
    return trainable, opt_state, np.concatenate(losses, axis=-1)
