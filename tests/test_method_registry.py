"""The registry: a decorator registers a method, checked; what a sweep reads of it is read when asked."""

import dataclasses
from typing import ClassVar
from unittest import mock

import pytest

from prefixlab.methods import METHODS, Method, MethodError, get_method, method_from_settings, method_settings, register
from prefixlab.methods.settings import setting
from prefixlab.sweep_config import SweepConfig


def test_register_adds_a_method_that_sweeps_and_flags_see():
    with mock.patch.dict(METHODS):
        @register
        @dataclasses.dataclass(frozen=True)
        class Scaled(Method):
            name: ClassVar[str] = "scaled"
            training: ClassVar[str] = "gradient"
            default_lr: ClassVar[float] = 1e-3
            factor: float = setting(1.0, "a factor")

        assert get_method("scaled", factor=2.0) == Scaled(2.0)
        assert method_from_settings(method_settings(Scaled(2.0))) == Scaled(2.0)
        config = SweepConfig(model="tiny", methods=("none", "scaled"), settings={"scaled": {"factor": "1,3"}})
        assert [g.tag for g in config.method_groups()] == ["none", "scaled", "scaled-factor3.0"]
        assert config.learning_rates("scaled") == [1e-4, 1e-3, 1e-2]
        assert Scaled(3.0).record_fields() == {"factor": 3.0}
    assert "scaled" not in METHODS


@pytest.mark.parametrize("attrs, needle", [
    (dict(name="lora"), "is taken by LoRA"),
    (dict(name="x", training="gradient"), "default_lr is 0.0"),
    (dict(name="x", training="genetic"), "trains by 'genetic'"),
])
def test_register_refuses_what_would_fail_later(attrs, needle):
    cls = dataclasses.dataclass(frozen=True)(type("Bad", (Method,), attrs))
    with mock.patch.dict(METHODS), pytest.raises(MethodError, match=needle):
        register(cls)


def test_todays_methods_keep_their_run_keys():
    """Run keys hash the method's key_tag: for today's methods what they hashed before (name, and LoRA's rank)."""
    from prefixlab.methods import LoRA, Prefix

    assert Prefix(init_mode="normal").key_tag == Prefix().key_tag == "prefix|"
    assert LoRA(rank=4, targets=("q",)).key_tag == "lora|4"
    assert get_method("none").key_tag == "none|" and get_method("prompt").key_tag == "prompt|"
