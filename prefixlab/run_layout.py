"""How the runs of one compiled program are laid out: all vmapped, k side by side, per base, sharded over devices.

Shape letters as in prefixlab/config.py (E base seeds, R runs per base, U steps).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec

from prefixlab.processes import put, to_host

# On CPU, runs sharing a frozen base go two at a time: the fastest measured width (docs/performance.md).
CPU_RUN_BATCH = 2


def default_run_batch(shares_base: bool) -> int:
    """Runs computed side by side by default: all of them (0, vmap) on GPU/TPU; on CPU `CPU_RUN_BATCH` for runs
    that share a frozen base, else one at a time."""
    if jax.default_backend() != "cpu":
        return 0
    return CPU_RUN_BATCH if shares_base else 1


def run_mesh() -> Mesh | None:
    """A one-axis mesh ('runs') over all devices, or None on a single device."""
    return jax.make_mesh((jax.device_count(),), ("runs",)) if jax.device_count() > 1 else None


def one_run_chunk(loss_fn: Callable, optimizer: optax.GradientTransformation, tick: Callable | None = None,
                  tick_every: int = 10) -> Callable:
    """The pure chunk of one run: `lax.scan` over the steps_U; step s uses key fold_in(key, s), so results do
    not depend on the chunk size. The update is scaled by the run's own learning rate (see make_optimizer).
    tick: called on the host (unordered, asynchronously: the program does not wait for it) after every
    `tick_every` steps of each pass over the steps, for progress bars finer than a chunk."""

    def chunk(trainable, opt_state, frozen, run_data, lr, key, steps_U):
        def body(carry, step):
            if tick is not None:
                jax.lax.cond((step + 1) % tick_every == 0, lambda: jax.debug.callback(tick, step), lambda: None)
            tr, os = carry
            loss, grads = jax.value_and_grad(loss_fn)(tr, frozen, run_data, jax.random.fold_in(key, step))
            updates, os = optimizer.update(grads, os, tr)
            updates = jax.tree.map(lambda u: u * lr.astype(u.dtype), updates)
            return (optax.apply_updates(tr, updates), os), loss

        (trainable, opt_state), losses_U = jax.lax.scan(body, (trainable, opt_state), steps_U)
        return trainable, opt_state, losses_U

    return chunk


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """run_batch: runs of one base side by side (0 = all, vmapped). per_base: every argument has a leading base
    axis (E, R, ...), `frozen` (E, ...); bases go one after another unless run_batch is 0. mesh: the run axis is
    split over devices, each running its slice with the single-device program (runs padded to fit)."""

    run_batch: int
    per_base: bool = False
    mesh: Mesh | None = None

    @classmethod
    def default(cls, per_base: bool, shares_base: bool, run_batch: int | None = None) -> RunLayout:
        return cls(default_run_batch(shares_base) if run_batch is None else run_batch, per_base, run_mesh())

    @property
    def run_axis(self) -> int:
        return 1 if self.per_base else 0

    def over_runs(self, chunk: Callable) -> Callable:
        """`chunk` of one run -> the same over every run (and base) of the program."""
        def runs(trainable, opt_state, frozen, run_data, lr, key, steps_U):
            if self.run_batch == 0:  # all runs side by side: what fills an accelerator
                return jax.vmap(chunk, in_axes=(0, 0, None, 0, 0, 0, None))(
                    trainable, opt_state, frozen, run_data, lr, key, steps_U)
            body = lambda xs: chunk(xs[0], xs[1], frozen, xs[2], xs[3], xs[4], steps_U)
            return jax.lax.map(body, (trainable, opt_state, run_data, lr, key), batch_size=self.run_batch)

        if not self.per_base:
            return runs
        if self.run_batch == 0:
            return jax.vmap(runs, in_axes=(0, 0, 0, 0, 0, 0, None))
        return lambda tr, os, fr, rd, lr, key, steps_U: jax.lax.map(  # bases one after another too
            lambda xs: runs(*xs, steps_U), (tr, os, fr, rd, lr, key))

    def passes(self, R: int, E: int = 1) -> int:
        """How many times a chunk's scan over the steps runs, summed over devices: on each, once per slice of
        `run_batch` runs (lax.map), per base when bases go one after another; once when all are vmapped. A chunk
        ticks passes x steps // tick_every times."""
        devices = self.mesh.size if self.mesh is not None else 1
        if self.run_batch == 0:
            return devices
        runs_per_device = math.ceil(R / devices)
        return devices * math.ceil(runs_per_device / self.run_batch) * (E if self.per_base else 1)

    def init_optimizer(self, optimizer: optax.GradientTransformation) -> Callable:
        init = jax.vmap(optimizer.init)
        return jax.jit(jax.vmap(init) if self.per_base else init)

    def _spec(self) -> PartitionSpec:
        return PartitionSpec(*[None] * self.run_axis, "runs")

    def compile(self, chunk: Callable) -> Callable:
        """The jitted program of one chunk over all runs; it donates the trainable and optimizer states."""
        fn = self.over_runs(chunk)
        if self.mesh is not None:
            spec, rep = self._spec(), PartitionSpec()
            fn = jax.shard_map(fn, mesh=self.mesh, in_specs=(spec, spec, rep, spec, spec, spec, rep),
                               out_specs=(spec, spec, spec))
        return jax.jit(fn, donate_argnums=(0, 1))

    def place(self, trainable_R, frozen, run_data_R, lr_R, key_R):
        """The program's inputs on its devices (padded runs on a mesh); a copy of `trainable_R` either way,
        since chunks donate their inputs."""
        if self.mesh is None:
            return jax.tree.map(jnp.copy, trainable_R), frozen, run_data_R, lr_R, key_R
        R = jax.tree.leaves(trainable_R)[0].shape[self.run_axis]
        pad = lambda tree: self.shard(_pad_runs(tree, self.run_axis, -R % self.mesh.size))
        frozen = put(frozen, NamedSharding(self.mesh, PartitionSpec()))
        return pad(trainable_R), frozen, pad(run_data_R), pad(lr_R), pad(key_R)

    def shard(self, tree):
        """`tree` split over the mesh along the run axis (unchanged on one device)."""
        if self.mesh is None:
            return tree
        return put(tree, NamedSharding(self.mesh, self._spec()))

    def unplace(self, trainable_R, losses, R: int):
        """Drops the padding runs; hands back ordinary single-device arrays."""
        if self.mesh is None:
            return trainable_R, losses
        keep = lambda x: jnp.asarray(np.take(np.asarray(x), np.arange(R), axis=self.run_axis))
        return jax.tree.map(keep, to_host(trainable_R)), np.take(losses, np.arange(R), self.run_axis)


def _pad_runs(tree, axis: int, pad: int):
    """Repeats run 0 `pad` times along `axis` so the run axis divides evenly over the devices."""
    if pad == 0:
        return tree
    extend = lambda x: jnp.concatenate([x, jnp.repeat(jax.lax.slice_in_dim(x, 0, 1, axis=axis), pad, axis)], axis)
    return jax.tree.map(extend, tree)
