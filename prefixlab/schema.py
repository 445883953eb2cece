"""Checks of what prefixlab reads from its files (config.json, manifest.json, meta.json, results.jsonl), by key and
type, before anything uses it: damage is then one line naming the file, the field and what was expected, not a
traceback from deep inside.

    check({"records": INT, "checkpoint": BOOL}, entry, "manifest.json, group add1/none")
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple


class SchemaError(ValueError):
    """A file's content of the wrong shape; the message names the file, the field and what was expected."""


class Kind(NamedTuple):
    text: str  # what is expected, as the message says it
    ok: Callable[[object], bool]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


INT = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
COUNT = Kind("an integer >= 0", lambda v: INT.ok(v) and v >= 0)
NUMBER = Kind("a number", _number)
FINITE = Kind("a finite number", lambda v: _number(v) and math.isfinite(v))
STR = Kind("a string", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
OBJECT = Kind("a JSON object", lambda v: isinstance(v, dict))
LIST = Kind("a list", lambda v: isinstance(v, list))


def optional(kind: Kind) -> Kind:
    return Kind(f"{kind.text} or null", lambda v: v is None or kind.ok(v))


def list_of(kind: Kind) -> Kind:
    return Kind(f"a list, each {kind.text}",
                lambda v: isinstance(v, list) and all(kind.ok(x) for x in v))


def object_of(kind: Kind) -> Kind:
    return Kind(f"an object, each value {kind.text}", lambda v: isinstance(v, dict) and all(kind.ok(x) for x in v.values()))


def type_name(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if _number(v) else type(v).__name__)


def check(fields: dict[str, Kind], obj, where: str, optional_keys=()) -> dict:
    """`obj` if it is an object holding every key of `fields` (those in `optional_keys` may be absent) of its kind;
    else SchemaError naming `where`, the field and what was expected."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: a JSON object expected, got {type_name(obj)}")
    for key, kind in fields.items():
        if key not in obj:
            if key in optional_keys:
                continue
            raise SchemaError(f"{where}: field {key!r} is missing ({kind.text} expected)")
        if not kind.ok(obj[key]):
            shown = repr(obj[key]) if len(repr(obj[key])) <= 40 else type_name(obj[key])
            raise SchemaError(f"{where}: field {key!r} must be {kind.text}, got {shown}")
    return obj
