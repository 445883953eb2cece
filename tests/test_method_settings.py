"""Reading a method's settings from flags, config files and the Python API."""

import pytest

from prefixlab.methods import LoRA, PrefixKV, SoftPrompt
from prefixlab.methods import settings as MS


def test_values_by_the_settings_types():
    assert MS.values_of(LoRA, "rank", "1,2,2") == (1, 2)
    assert MS.values_of(LoRA, "alpha", 2) == (2.0,)
    assert MS.values_of(PrefixKV, "projection", "true,false") == (True, False)
    assert MS.values_of(LoRA, "targets", "o,fc") == (("o", "fc"),)  # one tuple
    assert MS.values_of(LoRA, "targets", ["o", "fc"]) == (("o", "fc"),)
    assert MS.values_of(LoRA, "targets", [["o"], ("q", "v")]) == (("o",), ("q", "v"))  # several
    assert MS.values_of(SoftPrompt, "init_tokens", [[1, 2]]) == ((1, 2),)


@pytest.mark.parametrize("cls, field, given, needle", [
    (LoRA, "rank", "1.5", "lora.rank needs an integer"),
    (LoRA, "rank", True, "lora.rank needs an integer"),
    (PrefixKV, "projection", "yes", "prefix_kv.projection needs true or false"),
    (LoRA, "scaling", "", "lora.scaling needs a string"),
])
def test_bad_values_name_the_setting(cls, field, given, needle):
    with pytest.raises(MS.SettingError, match=needle):
        MS.values_of(cls, field, given)


def test_fields_and_json_values():
    assert [f.name for f in MS.fields(LoRA)] == ["targets", "rank", "alpha", "scaling"]  # inherited first
    assert MS.as_json(("o", "fc")) == "o,fc" and MS.as_json(3) == 3
    with pytest.raises(MS.SettingError, match="its settings: targets, rank, alpha, scaling"):
        MS.known(LoRA, "ranks")
