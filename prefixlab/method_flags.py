"""Command-line flags for every registered method's settings, made from the methods' dataclasses when a parser is
built: --<method>.<setting> takes a comma list of the values to sweep (a tuple setting, such as LoRA's targets,
takes one comma list per flag: repeat the flag to sweep several), and its help is the setting's own. The spellings
of earlier versions (each method's `aliases`: --lora-ranks, --prefix-init, --prefix-projection, ...) keep working,
hidden from --help."""

from __future__ import annotations

import argparse

from prefixlab.methods import METHODS
from prefixlab.methods import settings as MS


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) \
        else str(value)


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --<method>.<setting> for every setting of every registered method, and the earlier spellings."""
    group = parser.add_argument_group(
        "method settings", "each method's settings, from its dataclass: a sweep runs one group per combination of\n"
        "a method's values (comma lists; a setting that is itself a list takes one list per flag, repeated)")
    taken = set(parser._option_string_actions)
    for cls in METHODS.values():
        for f in MS.fields(cls):
            kind, is_tuple = MS.kind(cls, f.name)
            dest = f"{cls.name}.{f.name}"
            choices = f.metadata.get("choices")
            text = (f.metadata.get("help", "") + (f"; from {','.join(choices)}" if choices else "")
                    + f" (default: {_shown(f.default) or 'none'})").replace("%", "%%")
            if is_tuple:
                group.add_argument(f"--{dest}", dest=dest, action="append", default=None, metavar="A,B,...",
                                   help=text)
            else:
                group.add_argument(f"--{dest}", dest=dest, default=None, metavar=kind.__name__.upper(), help=text)
            taken.add(f"--{dest}")
        for old, name in cls.aliases.items():
            flag = "--" + old.replace("_", "-")
            if flag in taken:
                continue
            taken.add(flag)
            kind, is_tuple = MS.kind(cls, name)
            dest = f"{cls.name}.{name}"
            if kind is bool and not is_tuple:  # an earlier on/off switch: given means true
                parser.add_argument(flag, dest=dest, action="store_const", const="true", help=argparse.SUPPRESS)
            else:
                parser.add_argument(flag, dest=dest, action="append" if is_tuple else "store",
                                    help=argparse.SUPPRESS)


def old_spellings() -> list[str]:
    """The earlier flags that still work, as --help's epilog lists them."""
    return [f"--{old.replace('_', '-')} (--{cls.name}.{name})" for cls in METHODS.values()
            for old, name in cls.aliases.items()]


def is_method_flag(dest: str) -> bool:
    method, _, name = dest.partition(".")
    return bool(name) and method in METHODS


def settings_from(given: dict) -> dict:
    """{method: {setting: values}} (SweepConfig.settings) from parsed flags {dest: value}; flags not given are None."""
    out: dict = {}
    for dest, value in given.items():
        if value is None or not is_method_flag(dest):
            continue
        method, name = dest.split(".", 1)
        _, is_tuple = MS.kind(METHODS[method], name)
        out.setdefault(method, {})[name] = [tuple(v.split(",")) for v in value] if is_tuple else value
    return out
