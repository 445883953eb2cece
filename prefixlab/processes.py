"""Several JAX processes as one sweep (JAX's multi-controller runtime): every process runs the same programs in the
same order, the run axis spans every process's devices, and process 0 alone writes files.

What keeps them in step: process 0 decides what is already done (cached bases, finished groups) and tells the
others (`agree`); arrays come back to the host through an all-gather (`to_host`); Orbax saves and restores are
process-local, since only process 0 saves and what it saves is already on its host.

    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python scripts/sweep.py --distributed ...
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python scripts/sweep.py --distributed ...

Under a launcher JAX detects the cluster itself (SLURM, Open MPI, a TPU VM): docs/launchers.md.
"""

from __future__ import annotations

import os

import jax
import numpy as np


def initialize() -> None:
    """jax.distributed.initialize() from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID when they are
    set, else from the launcher's environment; on CPU with gloo collectives. Call before any other JAX call."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only; GPUs and TPUs have their own
    env = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
    given = {k: int(os.environ[v]) for k, v in env.items() if v in os.environ}
    jax.distributed.initialize(**given)


def is_multi() -> bool:
    return jax.process_count() > 1


def is_writer() -> bool:
    return jax.process_index() == 0


def to_host(tree):
    """numpy copies of `tree` on every process (an all-gather for arrays spread over several processes)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)
    return jax.tree.map(one, tree)


def agree(flags: list[bool]) -> list[bool]:
    """Process 0's `flags` on every process (unchanged in a single process)."""
    if not is_multi():
        return list(flags)
    from jax.experimental import multihost_utils

    got = multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32).reshape(-1))
    return [bool(v) for v in np.asarray(got)]


def checkpointer_options() -> dict:
    """StandardCheckpointer options: with several processes, Orbax acts for this process alone (no barriers)."""
    if not is_multi():
        return {}
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})}


def put(tree, sharding):
    """jax.device_put(tree, sharding), also for a sharding over several processes' devices: there each process
    supplies its devices' parts from its own full copy (every process holds the same values)."""
    if not is_multi():
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree)


def peer_failure(e: BaseException) -> str | None:
    """What a collective says when another process of the sweep has died (gloo: "connection closed by peer"), as
    one line; None when `e` is no such failure (one process: nothing to say)."""
    if not is_multi() or not isinstance(e, jax.errors.JaxRuntimeError):
        return None
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def leave(code: int) -> None:
    """Exits at once. After a peer's death JAX's shutdown at exit waits for it (a barrier, about 100 s) and then
    aborts with pages of runtime log; every file prefixlab writes is already complete at this point."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
