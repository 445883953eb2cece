"""A record's type, its one builder and the schema derived from the type."""

import pytest

from prefixlab import record, schema
from prefixlab.methods import LoRA, Prefix


def measured(**extra):
    return dict(seed=0, context_len=None, lr=5e-3, trainable_params=12, exact_match=0.5, token_accuracy=0.7,
                wall_s=1.0, **extra)


def build(method, **extra):
    return record.build(measured(**extra), task="add1", group=f"add1/{method.tag}", method=method, steps=20,
                        pretrain="add1", pretrain_steps=40, model="tiny", variant="classic")


def test_a_record_carries_its_methods_settings_as_the_method_names_them():
    r = build(LoRA(rank=2, targets=("o", "fc")))
    assert {k: r[k] for k in ("lora_rank", "lora_alpha", "lora_targets", "lora_scaling")} == {
        "lora_rank": 2, "lora_alpha": 1.0, "lora_targets": "o,fc", "lora_scaling": "constant"}
    assert "init" not in r and record.label(r) == "lora-r2-ofc" and record.group_of(r) == "add1/lora-r2-ofc"
    assert build(Prefix(init_mode="normal"))["init"] == "normal"


def test_schema_comes_from_the_type():
    assert {"task", "method", "exact_match", "trainable_params"} <= set(record.REQUIRED)
    assert "lora_rank" not in record.KINDS and "group" in record.OPTIONAL
    assert record.KINDS["cross_exact_match"].ok({"a": None, "b": 0.5}) and not record.KINDS["lr"].ok("x")
    with pytest.raises(schema.SchemaError, match="field 'steps_used' must be an integer or null"):
        schema.check(record.KINDS, build(Prefix(), steps_used=1.5), "here", record.OPTIONAL)


def test_a_setting_column_may_not_overwrite_the_records_own():
    class Clashing(Prefix):
        columns = {"init_mode": "lr"}

    with pytest.raises(ValueError, match=r"column\(s\) \['lr'\] would overwrite"):
        build(Clashing())


def test_a_diverged_base_clears_every_score():
    r = record.diverged(build(Prefix(), cross_exact_match={"sort_asc": 0.5}))
    assert r["status"] == "diverged" and r["exact_match"] is None and r["cross_exact_match"] == {"sort_asc": None}
