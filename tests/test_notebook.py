"""The Colab notebook runs headless on CPU, in this process: its code cells, with the tiny profile and two sections.
Its run cell calls prefixlab.experiments.run_reproduction, which must start no child process (a TPU chip takes one)."""

import json
from pathlib import Path

import jax

from tests.test_reproduce import forbid_child_processes

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colab_tpu.ipynb"


def test_notebook_runs_headless_in_process_with_the_tiny_profile(tmp_path, monkeypatch, capsys):
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"]["tags"]
    assert not any("scripts/reproduce.py\"," in "".join(c["source"]) for c in cells)  # no script started
    params = f'PROFILE = "tiny"\nSECTIONS = "exp1,theory"\nOUT = {str(tmp_path / "out")!r}\nREPO = ""\n'
    program = "\n\n".join([params] + ["".join(c["source"]) for c in cells[1:]])
    monkeypatch.setenv("PREFIXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(NOTEBOOK.parent.parent)
    forbid_child_processes(monkeypatch)
    x64 = jax.config.read("jax_enable_x64")
    exec(compile(program, str(NOTEBOOK), "exec"), {"__name__": "__main__"})
    assert jax.config.read("jax_enable_x64") == x64  # the theory checks' float64 is restored
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| exp1: prefix tuned to sort_desc |" in report and "## Theory verification" in report
    assert (tmp_path / "out" / "figures" / "exp1_attention.png").stat().st_size > 5000
    assert (tmp_path / "cache").is_dir() and (tmp_path / "out" / "exp1" / "config.json").exists()
    assert "# Reproduction report" in capsys.readouterr().out

    # re-running into the same OUT resumes the sweep (its config.json) instead of refusing or redoing it
    from prefixlab.experiments import run_reproduction

    lines = []
    run_reproduction("tiny", tmp_path / "out", sections="exp1", log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert any("(resuming)" in l for l in lines)
    claim_rows = lambda text: [l for l in text.splitlines() if l.startswith("| exp1:")]
    assert claim_rows((tmp_path / "out" / "report.md").read_text()) == claim_rows(report)
