"""Pid lock files: one owner at a time for a run directory or a base-cache entry; a dead owner's lock is taken over."""

from __future__ import annotations

import os
import time
from pathlib import Path


class LockHeld(Exception):
    """The lock belongs to another live process (`.pid`)."""

    def __init__(self, path: Path, pid: int):
        super().__init__(f"{path} is held by process {pid}")
        self.path, self.pid = path, pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:  # a zombie (exited, not yet reaped) holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


class PidLock:
    """`with PidLock(path):` creates `path` holding this pid (O_EXCL), or raises LockHeld if a live process holds
    it; with `wait`, polls until it is free instead (calling `on_wait(pid)` once). Released on exit."""

    def __init__(self, path: Path, wait: bool = False, on_wait=None, poll_s: float = 0.5):
        self.path, self.wait, self.on_wait, self.poll_s = Path(path), wait, on_wait, poll_s

    def __enter__(self):
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _holder(self.path)
                if pid is None:  # being written this instant, or empty: look again shortly
                    time.sleep(0.05)
                    pid = _holder(self.path)
                if pid is not None and (pid == os.getpid() or _alive(pid)):
                    if not self.wait:
                        raise LockHeld(self.path, pid) from None
                    if not told and self.on_wait:
                        self.on_wait(pid)
                        told = True
                    time.sleep(self.poll_s)
                    continue
                self.path.unlink(missing_ok=True)  # a dead owner's lock; O_EXCL decides who takes it
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return self

    def __exit__(self, *exc):
        if _holder(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)
        return False
