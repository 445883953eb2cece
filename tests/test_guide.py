"""The docs' Python blocks run as written: docs/guide/analysing.md on a sweep, docs/guide/extending.md's task and
its four kinds of method do what the page says, docs/theory.md's construction generates its targets."""

import re
from pathlib import Path
from unittest import mock

import jax
import numpy as np

from prefixlab import tasks as T
from prefixlab.config import preset
from tests.helpers import check_trains_only, flat_paths, tiny_model

CFG = preset("tiny", dropout=0.0)


def base_state():
    from flax import nnx

    return nnx.state(tiny_model(0))

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (GUIDE / page).read_text(), re.S)


def test_analysing_guide_runs_on_a_sweep(reference_sweep, capsys):
    _, _, tmp = reference_sweep
    code = "\n".join(python_blocks("analysing.md"))
    assert 'run_dir = "runs/api-demo"' in code
    namespace = {}
    exec(code.replace('"runs/api-demo"', repr(str(tmp / "run"))), namespace)
    assert namespace["shift"].rows > 0 and namespace["shift"].max_abs < 1e-5  # float32: the prefix only rescales
    out = capsys.readouterr().out
    assert "add1 prefix 1 " in out and "attention on the prefix:" in out


def test_extending_guide_task_composes(monkeypatch):
    task_block = python_blocks("extending.md")[0]
    monkeypatch.setitem(T.PRIMITIVES, "reverse", None)  # removed again after the test
    exec(task_block, {})
    batch = T.parse_mixture("reverse+add1").batch(jax.random.key(0), 4)
    x_BN, y_BN = np.asarray(batch.tokens_BT[:, :T.SEQ_LEN]), np.asarray(batch.targets_BT[:, T.FIRST_TARGET:])
    np.testing.assert_array_equal(y_BN, x_BN[:, ::-1] + 1)


def test_extending_guide_methods_need_no_other_change(tmp_path, monkeypatch):
    """The guide's four kinds of method, registered as its code runs (the registry is restored afterwards): each
    trains what it says and keeps every method's promises (tests/conformance.py), the sweep's flags know their
    settings, and one sweep runs them all with nothing else changed."""
    from prefixlab.methods import METHODS
    from tests.conformance import check_conformance
    from tests.helpers import load_script

    *method_blocks, sweep_block = python_blocks("extending.md")[1:]
    namespace = {}
    with mock.patch.dict(METHODS):
        for block in method_blocks:
            exec(block, namespace)
        assert {"layernorm", "one_block", "steering", "random_prompt"} <= set(METHODS)
        paths = [f"blocks/{b}/{ln}/{p}" for b in (0, 1) for ln in ("ln1", "ln2") for p in ("scale", "bias")]
        check_trains_only(namespace["LayerNorms"](), paths + ["ln_f/scale", "ln_f/bias"], 5 * 2 * 16)
        in_block_1 = {p: x for p, x in flat_paths(base_state()).items() if p.startswith("blocks/1/")}
        assert namespace["OneBlock"](index=1).n_params(CFG, None) == sum(x.size for x in in_block_1.values())
        check_trains_only(namespace["Steering"](), ["shift_LD"], 2 * 16)
        for name in ("layernorm", "one_block", "steering", "random_prompt"):
            check_conformance(METHODS[name])

        sweep_script = load_script(Path(__file__).resolve().parent.parent / "scripts" / "sweep.py")
        parser = sweep_script.build_parser()
        assert "--one_block.index" in parser.format_help() and "random prompts scored per run" in parser.format_help()
        flags = sweep_script.to_config(parser, parser.parse_args(argv := ["--methods", "one_block", "--one_block.index",
                                                                          "0,1", "--model", "tiny"]), argv)
        assert [g.tag for g in flags.method_groups()] == ["one_block", "one_block-index1"]

        monkeypatch.setenv("PREFIXLAB_CACHE", str(tmp_path / "cache"))
        exec(sweep_block.replace('"runs/guide-methods"', repr(str(tmp_path / "run"))), namespace)
    records = namespace["records"]
    groups = {r["group"] for r in records}
    assert groups == {f"add1/{t}" for t in ("none", "one_block", "one_block-index1", "steering", "random_prompt")}
    assert {r["index"] for r in records if r["method"] == "one_block"} == {0, 1}
    lrs = {m: sorted({r["lr"] for r in records if r["method"] == m}) for m in ("steering", "random_prompt")}
    assert lrs == {"steering": [5e-4, 5e-3, 5e-2], "random_prompt": [0.0]}  # its own grid; a search has none
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "| add1 | one_block | - |" in summary and "| add1 | one_block-index1 | - |" in summary
    assert "| add1 | random_prompt | 2 | - |" in summary


def test_theory_page_example_generates_its_targets(capsys):
    page = GUIDE.parent / "theory.md"
    (code,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    namespace = {}
    exec(code, namespace)
    assert np.asarray(namespace["generated"]).tolist() == [namespace["targets"]]
    assert "[[3 1 4 1 5 9 2 6]]" in capsys.readouterr().out
