"""prefixlab/schema.py: a value of the wrong shape is one message naming the file, the field and what was expected."""

import pytest

from prefixlab import schema as S

GROUP = {"records": S.COUNT, "checkpoint": S.BOOL, "hash": S.STR}


@pytest.mark.parametrize("obj, needle", [
    ([1], "manifest.json: a JSON object expected, got a list"),
    ({"records": 2, "checkpoint": True}, "field 'hash' is missing (a string expected)"),
    ({"records": "2", "checkpoint": True, "hash": "h"}, "field 'records' must be an integer >= 0, got '2'"),
    ({"records": -1, "checkpoint": True, "hash": "h"}, "field 'records' must be an integer >= 0, got -1"),
    ({"records": True, "checkpoint": True, "hash": "h"}, "field 'records' must be an integer >= 0, got True"),
    ({"records": 2, "checkpoint": 1, "hash": "h"}, "field 'checkpoint' must be true or false, got 1"),
])
def test_a_wrong_shape_names_the_file_field_and_expectation(obj, needle):
    with pytest.raises(S.SchemaError) as e:
        S.check(GROUP, obj, "manifest.json")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_optional_keys_and_nested_kinds():
    assert S.check(GROUP, {"records": 0, "checkpoint": False}, "m", optional_keys=("hash",))
    curve = S.list_of(S.optional(S.NUMBER))
    assert curve.ok([1.0, None, 2]) and not curve.ok([1.0, "x"]) and not curve.ok((1.0,))
    assert S.object_of(S.STR).ok({"a": "b"}) and not S.object_of(S.STR).ok({"a": 1})
