"""A method's settings: the fields of its dataclass. Their types say how a value is read (from a flag, a config.json
or the Python API), and `setting(default, help)` gives each the help of its generated flag (--<method>.<field>).

A sweep takes several values of each setting; `values_of` reads them: a scalar, a comma string or a list for a
scalar setting; for a tuple setting (LoRA's targets) one tuple, a comma string, or a list of tuples for several.
"""

from __future__ import annotations

import dataclasses
import functools
import typing


class SettingError(ValueError):
    """A setting that the method does not have, or a value of the wrong kind."""


def setting(default, help: str, choices: tuple | None = None):
    """A method setting: a dataclass field with the help of its flag and, where it has them, its valid values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def fields(cls) -> list[dataclasses.Field]:
    """The settings of a method class, in declaration order (`name`, where a class declares it as a field, is none)."""
    return [f for f in dataclasses.fields(cls) if f.name != "name"]


@functools.lru_cache(maxsize=None)
def _types(cls) -> dict:
    return typing.get_type_hints(cls)


def kind(cls, field: str) -> tuple[type, bool]:
    """(element type, whether the setting is a tuple of them): int, float, str or bool."""
    hint = _types(cls)[field]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def _text(kind_: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind_]


def scalar(cls, field: str, value):
    """One element of `field` read as its type (a string from a flag is parsed)."""
    kind_, _ = kind(cls, field)
    where = f"{cls.name}.{field}"
    if kind_ is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
    elif kind_ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind_ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind_ is str and isinstance(value, str) and value.strip():
        return value.strip()
    raise SettingError(f"{where} needs {_text(kind_)}, got {value!r}")


def one_value(cls, field: str, value):
    """One value of `field`: a scalar, or for a tuple setting a tuple (a comma string or a list of elements)."""
    _, is_tuple = kind(cls, field)
    if not is_tuple:
        return scalar(cls, field, value)
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise SettingError(f"{cls.name}.{field} needs a comma list, got {value!r}")
    return tuple(scalar(cls, field, v) for v in items)


def values_of(cls, field: str, given) -> tuple:
    """The values of `field` a sweep takes: see the module docstring."""
    _, is_tuple = kind(cls, field)
    if is_tuple:
        several = isinstance(given, (list, tuple)) and given and all(isinstance(v, (list, tuple)) for v in given)
        values = [one_value(cls, field, v) for v in given] if several else [one_value(cls, field, given)]
    else:
        items = given.split(",") if isinstance(given, str) else given
        values = [scalar(cls, field, v) for v in (items if isinstance(items, (list, tuple)) else [items])]
    if not values:
        raise SettingError(f"{cls.name}.{field} needs at least one value")
    return tuple(dict.fromkeys(values))


def known(cls, field: str) -> None:
    names = [f.name for f in fields(cls)]
    if field not in names:
        raise SettingError(f"method {cls.name!r} has no setting {field!r}; its settings: {', '.join(names) or 'none'}")


def as_json(value):
    """A setting's value as a record column holds it: a tuple as a comma string."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else value
