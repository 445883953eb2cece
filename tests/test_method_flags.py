"""Flags made from the methods' settings; the earlier spellings give the same sweep."""

from pathlib import Path

import pytest

from tests.helpers import load_script

SWEEP = load_script(Path(__file__).resolve().parent.parent / "scripts" / "sweep.py")


def config(*argv):
    parser = SWEEP.build_parser()
    return SWEEP.to_config(parser, SWEEP.parse_flags(parser, list(argv)), list(argv))


def test_every_setting_has_a_flag_with_its_help():
    from prefixlab.methods import METHODS
    from prefixlab.methods import settings as MS

    text = SWEEP.build_parser().format_help()
    for cls in METHODS.values():
        for f in MS.fields(cls):
            assert f"--{cls.name}.{f.name}" in text
    assert "the rank r of the update (default: 1)" in text
    assert "--lora-ranks" not in text.split("earlier spellings")[0]  # hidden, listed once at the end


def test_old_spellings_give_the_same_sweep():
    new = config("--model", "tiny", "--lora.rank", "1,2", "--lora.targets", "o,fc", "--lora.scaling", "peft",
                 "--prefix.init_mode", "normal,sample_vocab", "--prefix_kv.projection", "true",
                 "--soft_prompt.init_mode", "random")
    old = config("--model", "tiny", "--lora-ranks", "1,2", "--lora-targets", "o,fc", "--lora-scaling", "peft",
                 "--prefix-init", "normal,sample_vocab", "--prefix-projection", "--soft-prompt-init", "random")
    assert new == old
    assert [g.tag for g in new.method_groups()] == [
        "none", "prompt", "soft_prompt-random", "prefix", "prefix-sample_vocab", "prefix_kv-projection",
        "lora-r1-ofc", "lora-r2-ofc", "full"]


def test_a_tuple_setting_is_one_list_per_flag():
    c = config("--model", "tiny", "--methods", "lora", "--lora.targets", "q,v", "--lora.targets", "o")
    assert [g.tag for g in c.method_groups()] == ["lora-r1-qv", "lora-r1-o"]


@pytest.mark.parametrize("argv, needle", [
    (["--lora.rank", "x"], "--lora.rank needs an integer"),
    (["--lora.bogus", "1"], "unrecognized arguments: --lora.bogus"),
])
def test_bad_method_flags(argv, needle, capsys):
    with pytest.raises(SystemExit):
        config("--model", "tiny", *argv)
    assert needle in capsys.readouterr().err
