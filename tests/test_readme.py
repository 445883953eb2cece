"""The README's Python example runs as written, in process."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_api_example_runs_in_process(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFIXLAB_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    printed = capsys.readouterr().out.splitlines()  # the sweep's log, then the example's lines
    assert len(scope["records"]) == 2 * (1 + 3 + 3)  # 2 tasks x (none, prefix and lora at 3 rates each), 1 seed
    chosen = [r for r in scope["records"] if r["selected"]]
    assert len(chosen) == 6 and [line.split()[:2] for line in printed[-6:]] == [[r["task"], r["method"]] for r in chosen]
    assert {r["method"] for r in scope["records"]} == {"none", "prefix", "lora"}
    assert (tmp_path / "runs" / "api-demo" / "results.jsonl").exists()
    assert len(scope["probs"]) == 2 and scope["probs"][0].shape == (4, 2, 20, 20)  # tiny: 2 layers, 2 heads, 1 + 19
