"""Every registered method keeps the promises every method makes (tests/conformance.py): a method added later is
tested here without a test of its own."""

import pytest

from prefixlab.methods import METHODS
from tests.conformance import check_conformance


@pytest.mark.parametrize("name", list(METHODS))
def test_method_conforms(name):
    check_conformance(METHODS[name])
