"""The Colab notebook runs headless on CPU: its code cells, with the tiny profile and two sections."""

import json
import subprocess
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colab_tpu.ipynb"


def test_notebook_runs_headless_with_the_tiny_profile(tmp_path):
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"]["tags"]
    params = f'PROFILE = "tiny"\nSECTIONS = "exp1,theory"\nOUT = {str(tmp_path / "out")!r}\nREPO = ""\n'
    program = "\n\n".join([params] + ["".join(c["source"]) for c in cells[1:]])
    env_cache = {"PREFIXLAB_CACHE": str(tmp_path / "cache")}
    import os

    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                       cwd=NOTEBOOK.parent.parent, env={**os.environ, **env_cache})
    assert r.returncode == 0, r.stderr[-2000:]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| exp1: prefix tuned to sort_desc |" in report and "## Theory verification" in report
    assert (tmp_path / "out" / "figures" / "exp1_attention.png").stat().st_size > 5000
    assert "# Reproduction report" in r.stdout
