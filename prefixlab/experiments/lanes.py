"""Sections of a reproduction side by side in threads of this one process ("lanes").

On the 2-core CPU one training program leaves part of the machine idle: two at a time gave more throughput than one,
three no more than two (the measurements: docs/performance.md, "Programs side by side in threads"). An accelerator
is filled by one program, so there the default is one lane. A section starts once the sections it reads (AFTER)
have finished; JAX releases the GIL while a program runs, and float64 (the theory checks) is set per thread.
"""

from __future__ import annotations

import threading
from typing import Callable

import jax

# section -> the sections whose results or bases it reads, when they are part of the same reproduction
AFTER = {"exp4": ("exp3",), "spread": ("exp3",), "scaling": ("exp2", "exp3")}
CPU_LANES = 2


def default_lanes() -> int:
    return CPU_LANES if jax.default_backend() == "cpu" else 1


def start_order(sections: list[str]) -> list[str]:
    """Sections that others wait for first (so the waiting ones can start early), otherwise in the given order."""
    waited_on = {d for s in sections for d in AFTER.get(s, ()) if d in sections}
    return sorted(sections, key=lambda s: (s not in waited_on, sections.index(s)))


def run_lanes(sections: list[str], run_one: Callable[[str], None], lanes: int = 1, poll_s: float = 0.5) -> None:
    """run_one(section) for every section, `lanes` at a time (1: one after another in this thread, in the given
    order). After an error no further section starts; those running finish, so nothing they compute is lost, and
    the first error is raised. The lanes are daemon threads: an interrupt of the caller ends the process (the
    sweeps resume from their last saves when run again)."""
    if lanes <= 1 or len(sections) <= 1:
        for name in sections:
            run_one(name)
        return
    pending, done, errors = start_order(list(sections)), set(), []
    cond = threading.Condition()
    ready = lambda s: all(d in done or d not in sections for d in AFTER.get(s, ()))

    def lane():
        while True:
            with cond:
                while not errors and pending and not any(ready(s) for s in pending):
                    cond.wait()
                if errors or not pending:
                    return
                name = next(s for s in pending if ready(s))
                pending.remove(name)
            try:
                run_one(name)
            except BaseException as e:  # noqa: B036 - handed to the caller's thread, raised there
                with cond:
                    errors.append(e)
                    cond.notify_all()
                return
            with cond:
                done.add(name)
                cond.notify_all()

    threads = [threading.Thread(target=lane, name=f"lane-{i}", daemon=True) for i in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(poll_s)  # in short waits, so that Ctrl-C reaches this thread
    if errors:
        raise errors[0]
