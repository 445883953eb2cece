"""The method registry: name -> method class, read whenever a method is looked up, so a method registered at run
time (a notebook's `@register` or `METHODS[name] = cls`) is a method like any other."""

from __future__ import annotations

import dataclasses

from prefixlab.methods import settings as S
from prefixlab.methods.base import TRAINING_KINDS, Method, MethodError

METHODS: dict[str, type[Method]] = {}  # in registration order: the order of `sweep.py --help`


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: registers a method under `cls.name` (replacing an earlier class of that name and
    qualified name, as a notebook cell run twice defines it again)."""
    if not (isinstance(cls, type) and issubclass(cls, Method) and dataclasses.is_dataclass(cls)):
        raise MethodError(f"register: {cls!r} is not a dataclass subclassing Method")
    held = METHODS.get(cls.name)
    if held is not None and held.__qualname__ != cls.__qualname__:
        raise MethodError(f"register: method name {cls.name!r} is taken by {held.__qualname__}")
    if cls.training not in TRAINING_KINDS:
        raise MethodError(f"register: {cls.name} trains by {cls.training!r}; valid: {', '.join(TRAINING_KINDS)}")
    if cls.training == "gradient" and not cls.default_lr > 0:
        raise MethodError(f"register: {cls.name} trains by gradient but its default_lr is {cls.default_lr}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def get_method(name: str, **settings) -> Method:
    return method_class(name)(**settings)


def method_settings(method: Method) -> dict:
    """{"name": ..., setting: value}: what a checkpoint stores to rebuild `method` (JSON-ready)."""
    values = {f.name: getattr(method, f.name) for f in S.fields(method)}
    return {"name": method.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}


def method_from_settings(settings: dict) -> Method:
    """The method that `method_settings` described (a checkpoint's settings from before a setting existed get that
    setting's earlier behaviour where the method names it in `stored_before`)."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    cls = method_class(d.pop("name"))
    return cls(**{**getattr(cls, "stored_before", {}), **d})
