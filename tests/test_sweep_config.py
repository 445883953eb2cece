import dataclasses

import pytest

from prefixlab.sweep import SweepConfig, SweepError, load_config, run_sweep


def test_json_round_trip_and_hashable():
    config = SweepConfig(model="tiny", pretrain="add1, sort_asc", tasks="add1,sort_asc+add1", tune_tasks=["add1"],
                         prefix_lengths=[1, 4], settings={"prefix": {"init_mode": "normal,sample_vocab"}},
                         tune_lr={"prefix": [5e-3, 1e-2]},
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
    (dict(settings={"lora": {"rank": "x"}}), "lora.rank", "lora.rank needs an integer"),
    (dict(settings={"lora": {"ranks": (1,)}}), "settings", "has no setting .ranks.; its settings: targets, rank, alpha"),
    (dict(settings={"nope": {}}), "settings", "unknown method"),
    (dict(settings={"lora": {"rank": (0,)}}), "methods", "LoRA rank must be >= 1"),
    (dict(settings={"lora": {"scaling": "alpha"}}), "methods", "LoRA scaling must be one of constant, peft, rslora"),
    (dict(settings={"lora": {"alpha": (1.0, 2.0)}}), "lora.alpha", "share the tag 'lora-r1-qkvofcproj'"),
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


def test_settings_are_per_method_and_resolved():
    """Each method's groups are the product over its settings' values; a setting not given is its default, stored
    as such, so the config means the same whoever's defaults read it later."""
    config = SweepConfig(model="tiny", methods=("none", "prefix", "lora"),
                         settings={"lora": {"rank": "1,2", "targets": [("o",), ("q", "v")]}, "soft_prompt": {}})
    tags = [g.tag for g in config.method_groups()]
    assert tags == ["none", "prefix-sample_vocab", "lora-r1-o", "lora-r2-o", "lora-r1-qv", "lora-r2-qv"]  # targets-major
    assert config.settings_of("lora") == {"targets": (("o",), ("q", "v")), "rank": (1, 2), "alpha": (1.0,),
                                          "scaling": ("constant",)}
    assert "soft_prompt" not in dict(config.settings)  # not run: dropped
    assert config.to_dict()["settings"]["lora"]["targets"] == [["o"], ["q", "v"]]
    assert SweepConfig.from_json(config.to_json()) == config
    assert SweepConfig(model="tiny") == SweepConfig(model="tiny", settings={"lora": {"rank": 1}})


def old_layout(**fields) -> dict:
    """A config.json's sweep fields as prefixlab wrote them before methods owned their settings."""
    stored = {k: v for k, v in SweepConfig().to_dict().items() if k != "settings"}
    return {**stored, "lora_ranks": [1], "lora_targets": ["q", "k", "v", "o", "fc", "proj"], "lora_alpha": 1.0,
            "lora_scaling": "constant", "soft_prompt_init": "sample_vocab", "prefix_inits": ["sample_vocab"],
            "prefix_projection": False, **fields}


def test_old_config_files_read_as_they_ran(tmp_path):
    import json

    from prefixlab.sweep_config import CONFIG_VERSION

    assert SweepConfig.from_dict(old_layout()) == SweepConfig()
    old = SweepConfig.from_dict(old_layout(lora_ranks=[1, 4], prefix_inits=["normal", "sample_vocab"],
                                           prefix_projection=True))
    assert [g.tag for g in old.method_groups()] == [
        "none", "prompt", "soft_prompt-sample_vocab", "prefix", "prefix-sample_vocab", "prefix_kv-projection",
        "lora-r1-qkvofcproj", "lora-r4-qkvofcproj", "full"]
    stored = old_layout()
    del stored["lora_scaling"]  # from before LoRA had a scaling: alpha / r
    (tmp_path / "config.json").write_text(json.dumps({"config_version": CONFIG_VERSION, "sweep": stored}))
    assert load_config(tmp_path).settings_of("lora")["scaling"] == ("peft",)
    assert SweepConfig().settings_of("lora")["scaling"] == ("constant",)


def test_a_method_registered_after_import_trains_at_its_own_rates(monkeypatch):
    """Defect B (468b134: LR_DEFAULTS, a snapshot taken at import, gave a method registered later learning rate 0 and
    refused it a --tune-lr): the registry is read when a sweep asks, as a notebook registers after import."""
    from prefixlab.methods import METHODS
    from prefixlab.methods.embedding import Embedding

    @dataclasses.dataclass(frozen=True)
    class Late(Embedding):
        name: str = "late"

    monkeypatch.setitem(METHODS, "late", Late)
    assert SweepConfig(model="tiny", methods=("none", "late")).learning_rates("late") == [5e-4, 5e-3, 5e-2]
    assert SweepConfig(model="tiny", methods=("late",), tune_lr={"late": (1e-2,)}).learning_rates("late") == [1e-2]


def test_a_run_directory_from_before_methods_owned_their_settings_resumes(reference_sweep, tmp_path):
    """A run directory whose config.json and manifest the previous layout wrote (lora_ranks, prefix_inits, ...; the
    groups' hashes of that file) resumes: its finished groups are kept, an unfinished one runs again with the same
    results, and config.json is kept as written."""
    import json
    import shutil

    from prefixlab.run_dir import config_hash

    _, records, tmp = reference_sweep
    run = tmp_path / "run"
    shutil.copytree(tmp / "run", run)
    stored = json.loads((run / "config.json").read_text())
    stored["sweep"] = old_layout(**{k: v for k, v in stored["sweep"].items() if k != "settings"})
    (run / "config.json").write_text(json.dumps(stored))
    manifest = json.loads((run / "manifest.json").read_text())
    for entry in manifest["groups"].values():
        entry["config_hash"] = config_hash(stored["sweep"])
    del manifest["groups"]["add1/none"]  # a group the interrupted run had not finished
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = [line for line in (run / "results.jsonl").read_text().splitlines() if '"add1/none"' not in line]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    before = (run / "config.json").read_bytes()

    again = run_sweep(None, run, resume=True, progress=False, log=lambda *a, **k: None)
    assert (run / "config.json").read_bytes() == before
    key = lambda r: (r["group"], r["seed"], r["context_len"], r["lr"])
    old = {key(r): r for r in records}
    assert sorted(map(key, again)) == sorted(old)
    for r in again:
        assert {k: v for k, v in r.items() if k != "wall_s"} == {k: v for k, v in old[key(r)].items() if k != "wall_s"}
    assert run_sweep(None, run, resume=True, progress=False, log=lambda *a, **k: None) == again  # and again
