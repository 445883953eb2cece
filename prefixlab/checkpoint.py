"""Orbax checkpoints of parameter trees, with a JSON description beside each one.

Layout of one checkpoint directory:
    <dir>/arrays/     Orbax (OCDBT) checkpoint of the tree; Orbax writes it to a temporary name and renames it
                      when complete, so a kill never leaves a half-written `arrays/`
    <dir>/meta.json   written after `arrays/` is complete: format version, the SHA-256 of every file under
                      `arrays/`, what the tree is, and the caller's description (configuration, losses, wall time)
A directory without `meta.json` is an unfinished save and is treated as absent. `restore` checks every file's
checksum first: a damaged or missing file is a CheckpointError naming it, never a silent restore.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from prefixlab import schema as S
from prefixlab.processes import checkpointer_options, is_multi, to_host
from prefixlab.safe_paths import remove, replace_bytes

FORMAT = 2  # 2: meta.json holds the arrays' checksums


class CheckpointError(Exception):
    """A checkpoint that exists but cannot be used; the message names the file and what is wrong."""


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def write_json_atomic(path: Path, obj) -> None:
    """Writes `obj` as JSON to a new file beside `path`, then renames it into place (a link there is replaced)."""
    replace_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def recover(directory: Path) -> None:
    """Finishes a replacement that a kill interrupted (see `save`). Only writers call it: readers read."""
    directory = Path(directory)
    if (directory / "meta.json").is_file():
        return
    for spare in (directory.with_name(directory.name + ".saving"), directory.with_name(directory.name + ".old")):
        if (spare / "meta.json").is_file():
            remove(directory)
            os.rename(spare, directory)
            return


def exists(directory: Path) -> bool:
    """Whether `directory` holds a finished save (a `recover`able one counts as absent until recovered)."""
    return (Path(directory) / "meta.json").is_file()


def save(directory: Path, tree, meta: dict) -> None:
    """Saves `tree` (a pytree of arrays) and `meta` (JSON-able) to `directory`. An existing checkpoint there is
    replaced only once the new one is complete, so a kill at any moment leaves one readable checkpoint."""
    directory = Path(directory).parent.resolve() / Path(directory).name  # absolute; a link there is not followed
    fresh, old = directory.with_name(directory.name + ".saving"), directory.with_name(directory.name + ".old")
    for d in (fresh, old):
        remove(d)
    fresh.mkdir(parents=True)
    try:
        with ocp.StandardCheckpointer(**checkpointer_options()) as ckptr:
            ckptr.save(fresh / "arrays", to_host(tree) if is_multi() else tree)  # Orbax takes no process-local jax.Array there
            ckptr.wait_until_finished()
    except OSError:
        raise
    except Exception as e:  # Orbax and tensorstore raise their own types, say for a full or read-only disk
        raise CheckpointError(f"{fresh / 'arrays'}: cannot save ({_first_line(e)})") from None
    write_json_atomic(fresh / "meta.json", {"format": FORMAT, "files": file_checksums(fresh / "arrays"), **meta})
    if directory.exists() or directory.is_symlink():
        os.rename(directory, old)
    os.rename(fresh, directory)
    remove(old)


def read_meta(directory: Path) -> dict:
    path = Path(directory) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint description ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: a JSON object expected, got {S.type_name(meta)}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this prefixlab reads {FORMAT} "
                              "(format 1 had no checksums: remove the directory to recompute it)")
    return checked(meta, {"files": S.object_of(S.STR)}, path)


def checked(meta: dict, fields: dict, path, optional_keys=()) -> dict:
    """`meta` if it holds `fields` of their kinds (schema.check), else CheckpointError naming the field."""
    try:
        return S.check(fields, meta, str(path), optional_keys)
    except S.SchemaError as e:
        raise CheckpointError(str(e)) from None


def file_checksums(root: Path) -> dict:
    """{path relative to root: SHA-256 of its bytes} for every file under root."""
    out = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[path.relative_to(root).as_posix()] = h.hexdigest()
    return out


def verify(directory: Path, hint: str = "") -> dict:
    """Checks every file under `directory`/arrays against the checksums in its meta.json; returns the meta.
    Raises CheckpointError naming the first missing, damaged or unexpected file (+ `hint`: what to do)."""
    directory = Path(directory).resolve()
    meta = read_meta(directory)
    want, have = meta.get("files", {}), file_checksums(directory / "arrays")
    for name in sorted(set(want) | set(have)):
        problem = ("missing" if name not in have else "not written by this save" if name not in want
                   else "damaged (checksum mismatch)" if have[name] != want[name] else None)
        if problem:
            raise CheckpointError(f"{directory / 'arrays' / name}: {problem}" + (f"; {hint}" if hint else ""))
    return meta


def restore(directory: Path, like, expect: dict | None = None, hint: str = ""):
    """Restores the tree saved in `directory` with the structure, shapes and dtypes of `like` (arrays or
    ShapeDtypeStructs). `expect`: entries `meta.json` must hold (e.g. the model configuration); a mismatch or an
    unreadable, missing or damaged file raises CheckpointError naming the file (+ `hint`: what to do)."""
    directory = Path(directory).resolve()
    meta = verify(directory, hint)
    for k, v in (expect or {}).items():
        if meta.get(k) != v:
            raise CheckpointError(f"{directory / 'meta.json'}: incompatible checkpoint, {k} is {meta.get(k)!r}, "
                                  f"expected {v!r}")
    try:
        with ocp.StandardCheckpointer(**checkpointer_options()) as ckptr:
            if not is_multi():
                return ckptr.restore(directory / "arrays", _abstract(like))
            as_numpy = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), _abstract(like))
            return jax.tree.map(jax.numpy.asarray, ckptr.restore(directory / "arrays", as_numpy))
    except Exception as e:  # Orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
        raise CheckpointError(f"{directory / 'arrays'}: cannot restore ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {first[:200]}"


def content_hash(obj) -> str:
    """A short stable name for a JSON-able configuration: the same content, the same name, on every machine."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ChunkCheckpoint:
    """A training program's state between chunks (trainable, optimizer state, steps done, losses so far), saved
    at most every `every_s` seconds, so a killed run continues from its last saved chunk with the same result:
    step s always uses key fold_in(run key, s)."""

    def __init__(self, directory: Path, every_s: float = 60.0):
        self.directory = Path(directory)
        self.every_s = every_s

    def load(self, trainable, opt_state, extra=None):
        """(trainable, opt_state, steps done, losses (..., done), extra) from the last save, or None. extra: a tree
        like the one saved with it (say the stopping state), or None."""
        recover(self.directory)
        if not exists(self.directory):
            return None
        meta = checked(read_meta(self.directory), {"done": S.COUNT, "losses_shape": S.list_of(S.COUNT)},
                       self.directory / "meta.json")
        if (extra is None) != (not meta.get("extra", False)):
            raise CheckpointError(f"{self.directory}: saved {'with' if meta.get('extra') else 'without'} a stopping "
                                  "state, resumed the other way: continue it with the settings it started with")
        like = {"trainable": trainable, "opt_state": opt_state,
                "losses": jax.ShapeDtypeStruct(tuple(meta["losses_shape"]), "float32")}
        if extra is not None:
            like["extra"] = extra
        state = restore(self.directory, like)
        return (state["trainable"], state["opt_state"], meta["done"], np.asarray(state["losses"]),
                state.get("extra"))

    def save(self, trainable, opt_state, done: int, losses, extra=None) -> None:
        tree = {"trainable": trainable, "opt_state": opt_state, "losses": losses}
        if extra is not None:
            tree["extra"] = extra
        save(self.directory, tree, {"kind": "training state", "done": done, "losses_shape": list(losses.shape),
                                    "extra": extra is not None})

    def clear(self) -> None:
        for d in (self.directory, self.directory.with_name(self.directory.name + ".saving"),
                  self.directory.with_name(self.directory.name + ".old")):
            remove(d)
