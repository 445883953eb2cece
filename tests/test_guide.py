"""The docs' Python blocks run as written: docs/guide/analysing.md on a sweep, docs/guide/extending.md's task
and method do what the page says, docs/theory.md's construction generates its targets."""

import re
from pathlib import Path

import jax
import numpy as np

from prefixlab import tasks as T
from tests.helpers import check_trains_only

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


def test_extending_guide_task_composes_and_method_trains_only_layernorms(monkeypatch):
    task_block, method_block = python_blocks("extending.md")
    monkeypatch.setitem(T.PRIMITIVES, "reverse", None)  # removed again after the test
    exec(task_block, {})
    batch = T.parse_mixture("reverse+add1").batch(jax.random.key(0), 4)
    x_BN, y_BN = np.asarray(batch.tokens_BT[:, :T.SEQ_LEN]), np.asarray(batch.targets_BT[:, T.FIRST_TARGET:])
    np.testing.assert_array_equal(y_BN, x_BN[:, ::-1] + 1)

    namespace = {}
    exec(method_block, namespace)
    paths = [f"blocks/{b}/{ln}/{p}" for b in (0, 1) for ln in ("ln1", "ln2") for p in ("scale", "bias")]
    check_trains_only(namespace["LayerNorms"](), paths + ["ln_f/scale", "ln_f/bias"], 5 * 2 * 16)


def test_theory_page_example_generates_its_targets(capsys):
    page = GUIDE.parent / "theory.md"
    (code,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    namespace = {}
    exec(code, namespace)
    assert np.asarray(namespace["generated"]).tolist() == [namespace["targets"]]
    assert "[[3 1 4 1 5 9 2 6]]" in capsys.readouterr().out
