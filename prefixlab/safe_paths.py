"""Every path prefixlab writes, replaces or deletes, confined to the root it belongs to: a run directory or the base
cache. Run directories and caches travel between people, so what they name is input, as an archive's member names
are: the rules follow the zip-slip hardening archive tools adopted.

- An entry (a manifest's `written` path, a group name) is relative, has no '..' and names something strictly
  inside the root, never the root itself.
- Every folder above the target must resolve inside the root: a link on the way that leads out is refused.
- The target itself is never followed: a link there is removed, or replaced by a new file, as a link.
- A write is a new file renamed into place (a kill leaves the old file or the new one); an append adds whole bytes
  or nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath


class UnsafePath(ValueError):
    """A path that would lead a write or a delete outside its root; the message names it and its root."""


def check_entry(entry, where: str) -> str:
    """`entry` as a clean relative POSIX path, or UnsafePath naming `where` (the file it came from)."""
    if not isinstance(entry, str) or not entry.strip():
        raise UnsafePath(f"{where}: entry {entry!r} must be a non-empty relative path")
    path = PurePosixPath(entry)
    if path.is_absolute():
        raise UnsafePath(f"{where}: entry {entry!r} is absolute; only paths inside the directory are allowed")
    if ".." in path.parts:
        raise UnsafePath(f"{where}: entry {entry!r} contains '..'; only paths inside the directory are allowed")
    if path == PurePosixPath("."):
        raise UnsafePath(f"{where}: entry {entry!r} names the directory itself, not something inside it")
    return path.as_posix()


def inside(root, entry: str, where: str | None = None) -> Path:
    """root/entry after the checks above: absolute, every folder above it resolved (so no link on the way is
    followed later), the last component as it is. Raises UnsafePath."""
    root_r = Path(root).resolve()
    target = root_r / check_entry(entry, where or str(root))
    parent = target.parent.resolve()
    if parent != root_r and root_r not in parent.parents:
        raise UnsafePath(f"{root}/{entry}: {target.parent} resolves to {parent}, outside {root_r}; prefixlab "
                         "writes only inside it (remove the link)")
    return parent / target.name


def remove(path: Path) -> None:
    """Removes a file, a link (never its target) or a folder tree (links in it are removed, not followed)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _named(e: OSError, path: Path) -> OSError:
    """`e` with the path it concerns, so that one line can name it."""
    return e if e.filename is not None else OSError(e.errno, e.strerror or str(e), str(path))


def replace_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to a new file beside `path`, then renames it over `path`: a link there is replaced, never
    written through, and a kill or a full disk leaves the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _named(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_bytes(path: Path, data: bytes) -> None:
    """Appends `data` in one write + fsync, never through a link (O_NOFOLLOW); a failed or short write (a full disk)
    is cut off again, so the file holds all of `data` or none of it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, size)
            raise _named(e, path) from None
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def real_dir(path: Path) -> Path:
    """`path` as a real folder (created if missing): a link there is replaced by an empty folder."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_dirs(path: Path) -> list[Path]:
    """Creates `path` and its missing parents; returns the folders it created, outermost first, for `unmake`."""
    path = Path(path).absolute()
    missing = []
    while not path.exists() and not path.is_symlink():
        missing.append(path)
        path = path.parent
    made = []
    for d in reversed(missing):
        try:
            d.mkdir()
            made.append(d)
        except FileExistsError:  # another lane or process made it first: not ours to remove
            if not d.is_dir() or d.is_symlink():
                raise
    return made


def unmake(created: list[Path]) -> None:
    """Removes folders `make_dirs` created, innermost first, where they are still empty: a refused start leaves
    nothing behind."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass
