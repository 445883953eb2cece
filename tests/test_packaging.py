"""What a fresh install gets: the Python versions prefixlab supports, and upper bounds where a dependency has
announced a breaking major version."""

import sys
import tomllib
from pathlib import Path

PROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
SUPPORTED = ("3.12", "3.13")  # 3.12 on these machines, 3.13 on Colab (its image's Python)


def test_supported_python_versions_are_declared_and_this_is_one():
    declared = tuple(c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if c.count("::") == 2
                     and c.startswith("Programming Language :: Python :: 3."))
    assert declared == SUPPORTED
    assert PROJECT["requires-python"] == ">=3.12"  # pip on 3.11 would silently install jax 0.10
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED


def test_orbax_stays_below_its_v1_default():
    (orbax,) = [d for d in PROJECT["dependencies"] if d.startswith("orbax-checkpoint")]
    assert "<1" in orbax.replace(" ", "").split(",")
