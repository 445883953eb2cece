import dataclasses

import pytest

from prefixlab.sweep import SweepConfig, SweepError, load_config, run_sweep


def test_json_round_trip_and_hashable():
    config = SweepConfig(model="tiny", pretrain="add1, sort_asc", tasks="add1,sort_asc+add1", tune_tasks=["add1"],
                         prefix_lengths=[1, 4], prefix_inits="normal,sample_vocab", tune_lr={"prefix": [5e-3, 1e-2]},
                         cross_eval=False, cache_dir="some/cache")
    again = SweepConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config)
    assert config.pretrain == "add1,sort_asc" and config.tasks == ("add1", "sort_asc+add1")
    assert config.learning_rates("prefix") == [5e-3, 1e-2] and config.learning_rates("lora") == [5e-4, 5e-3, 5e-2]
    # every parameter-efficient method gets the same default grid; full fine-tuning a decade lower
    assert SweepConfig().learning_rates("soft_prompt") == SweepConfig().learning_rates("prefix") == [5e-4, 5e-3, 5e-2]
    assert SweepConfig().learning_rates("full") == [5e-5, 5e-4, 5e-3]
    assert SweepConfig(lr_grid=(1,)).learning_rates("lora") == [5e-3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seeds = 3


@pytest.mark.parametrize("fields, field, needle", [
    (dict(tasks="sort_up"), "tasks", "unknown task 'sort_up'"),
    (dict(methods="prefix,adapter"), "methods", "unknown method"),
    (dict(tune_steps=0), "tune_steps", "tune_steps must be >= 1"),
    (dict(patience=0), "patience", "patience must be >= 1"),
    (dict(lr_grid=(1.0, -2.0)), "lr_grid", "finite positive"),
    (dict(stop_tol=float("nan")), "stop_tol", "stop_tol must be"),
    (dict(prefix_lengths=(1, 65)), "prefix_lengths", "up to 64"),
    (dict(tune_lr={"prompt": 1e-3}), "tune_lr", "has no learning rate"),
    (dict(tune_tasks=("sort_asc",), tasks=("add1",)), "tune_tasks", "must be tasks of"),
    (dict(model="huge"), "model", "unknown model"),
])
def test_bad_config_names_its_field(fields, field, needle):
    with pytest.raises(SweepError, match=needle) as e:
        SweepConfig(**fields)
    assert e.value.field == field


def test_unknown_field_in_json_is_refused():
    with pytest.raises(SweepError, match="unknown SweepConfig field"):
        SweepConfig.from_dict({**SweepConfig().to_dict(), "lora_rank": 2})


def test_run_dir_rules_are_checked_before_compute(tmp_path):
    with pytest.raises(SweepError, match="cannot resume"):
        run_sweep(None, tmp_path / "nothing", resume=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "results.jsonl").write_text("{}\n")
    with pytest.raises(SweepError, match="already exists"):
        run_sweep(SweepConfig(model="tiny"), tmp_path / "full")
    with pytest.raises(SweepError, match="exclude each other"):
        run_sweep(SweepConfig(model="tiny"), tmp_path / "x", resume=True, force=True)


def test_match_params_group_restores_with_its_own_targets(tmp_path):
    """The matched LoRA (o,fc,proj) in a sweep whose lora_targets are all six (the default) restores from its own
    settings; parsing its tag with the sweep's targets rebuilt six."""
    config = SweepConfig(model="tiny", pretrain="add1", tasks=("add1",), methods=("none",), prefix_lengths=(12,),
                         match_params=True, pretrain_steps=20, tune_steps=5, seeds=1, eval_samples=20, chunk=5,
                         cache_dir=str(tmp_path / "cache"))
    records = run_sweep(config, tmp_path / "run", progress=False, log=lambda *a, **k: None)
    assert {r["group"] for r in records} == {"add1/none", "add1/lora-r1-ofcproj"}
    assert load_config(tmp_path / "run") == config
    from prefixlab.analysis import load_run

    run = load_run(tmp_path / "run")
    model, ctx = run.model("add1", "lora-r1-ofcproj", seed=0)
    attn = model.blocks[0].attn
    from prefixlab.methods.lora import LoRALinear
    assert ctx is None and not isinstance(attn.q, LoRALinear) and isinstance(attn.o, LoRALinear)
    assert config.method_groups()[1].tag == "lora-r1-ofcproj"


def test_a_relative_cache_dir_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = SweepConfig(cache_dir="runs/cache")
    assert config.cache_dir == str(tmp_path / "runs" / "cache")
    assert SweepConfig.from_json(config.to_json()) == config == SweepConfig(cache_dir=str(tmp_path / "runs/cache"))
    monkeypatch.setenv("PREFIXLAB_CACHE", "rel-cache")
    assert SweepConfig().resolved().cache_dir == str(tmp_path / "rel-cache")


def test_unknown_sweep_preset_names_the_valid_ones():
    with pytest.raises(SweepError, match="valid: minute"):
        SweepConfig.preset("hour")


def test_variant_reason_names_the_extended_only_task():
    assert "modulo exist(s) only in extended" in SweepConfig(tasks=("add1", "modulo")).variant_reason
    assert "every task exists in classic" in SweepConfig().variant_reason
    assert "as asked" in SweepConfig(variant="extended").variant_reason


def test_run_directories_from_before_lora_scaling_resume_with_alpha_over_rank(tmp_path):
    import json

    from prefixlab.sweep_config import CONFIG_VERSION

    stored = SweepConfig().to_dict()
    del stored["lora_scaling"]
    (tmp_path / "config.json").write_text(json.dumps({"config_version": CONFIG_VERSION, "sweep": stored}))
    assert load_config(tmp_path).lora_scaling == "peft"
    assert SweepConfig().lora_scaling == "constant"
    with pytest.raises(SweepError, match="lora_scaling must be one of constant, peft, rslora"):
        SweepConfig(lora_scaling="alpha")
