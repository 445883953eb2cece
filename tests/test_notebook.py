"""The Colab notebook runs headless on CPU, in this process: its code cells, with the tiny profile and two sections.
Its run cell calls prefixlab.experiments.run_reproduction, which must start no child process (a TPU chip takes one).
The parameters keep Drive off, and prefixlab is importable from the checkout, so nothing is mounted or installed;
the Drive cell is then run against a stand-in google.colab, and the report cell against a stand-in IPython."""

import json
import os
import re
import sys
import types
from pathlib import Path

import jax

from tests.test_reproduce import forbid_child_processes

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colab_tpu.ipynb"


def code_cells():
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    return [("".join(c["source"]), c["metadata"].get("tags", [])) for c in cells]


def run_cell(source, namespace):
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)


class Shell:
    """get_ipython() of the test: records line magics (%pip) instead of running them."""

    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))


def test_notebook_runs_headless_in_process_with_the_tiny_profile(tmp_path, monkeypatch, capsys):
    cells = code_cells()
    assert "parameters" in cells[0][1]
    tagged = {tag: source for source, tags in cells for tag in tags}
    assert {"install", "drive", "run", "report"} <= set(tagged)
    assert not any("scripts/reproduce.py\"," in source for source, _ in cells)  # no script started
    repo = re.search(r'^REPO = "([^"]+)"', cells[0][0], re.M).group(1)
    assert repo in (NOTEBOOK.parent.parent / "pyproject.toml").read_text()  # [project.urls] Repository
    out = tmp_path / "out"
    params = {"PROFILE": "tiny", "SECTIONS": "exp1,theory", "OUT": str(out), "USE_DRIVE": False,
              "DRIVE_DIR": str(tmp_path / "drive"), "REPO": repo}
    assert set(re.findall(r"^(\w+) =", cells[0][0], re.M)) == set(params)  # the test sets every parameter
    monkeypatch.setenv("PREFIXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(NOTEBOOK.parent.parent)
    forbid_child_processes(monkeypatch)
    shell = Shell()
    x64 = jax.config.read("jax_enable_x64")

    def run_all():
        namespace = {"__name__": "__main__", "get_ipython": lambda: shell, **params}
        for source, _ in cells[1:]:
            run_cell(source, namespace)
        return namespace, capsys.readouterr().out

    namespace, printed = run_all()
    assert jax.config.read("jax_enable_x64") == x64  # the theory checks' float64 is restored
    assert shell.magics == [] and "prefixlab is importable: nothing installed" in printed
    assert "USE_DRIVE is off" in printed and f"OUT: {out}" in printed
    report = (out / "report.md").read_text()
    assert "| exp1: prefix tuned to sort_desc |" in report and "## Theory verification" in report
    assert (out / "figures" / "exp1_attention.png").stat().st_size > 5000
    assert (tmp_path / "cache").is_dir() and (out / "exp1" / "config.json").exists()
    # the log streams while a section runs: the sweep's per-group lines come before the section ends (on a CPU
    # the theory section runs beside it, in the other lane)
    lines = printed.splitlines()
    at = lambda pattern: next(i for i, l in enumerate(lines) if re.search(pattern, l))
    assert at(r"^\[exp1\] starts") < at(r"sort_desc.*exact match") < at(r"^\[exp1\] done") < at(r"^report: ")
    assert at(r"^\[theory\] starts") < at(r"^\[theory\] done") < at(r"^report: ")
    # the report cell: the report's text, then each figure where the report places it
    assert "# Reproduction report" in printed and f"[figure: {out}/figures/exp1_attention.png]" in printed

    # every cell again, as after a kernel restart (a new namespace): nothing installed, the sweep resumes
    namespace, printed = run_all()
    assert shell.magics == [] and "(resuming)" in printed and "done earlier, kept" in printed
    claim_rows = lambda text: [l for l in text.splitlines() if l.startswith("| exp1:")]
    assert claim_rows((out / "report.md").read_text()) == claim_rows(report)
    # the install and Drive cells once more in the same session
    run_cell(tagged["install"], namespace)
    run_cell(tagged["drive"], namespace)
    assert shell.magics == [] and "nothing installed" in capsys.readouterr().out

    # USE_DRIVE without google.colab: skipped, said so
    namespace["USE_DRIVE"] = True
    run_cell(tagged["drive"], namespace)
    assert "Drive not mounted" in capsys.readouterr().out and namespace["out_dir"] == str(out)

    # on Colab (a stand-in google.colab): Drive mounted, OUT and the base cache under DRIVE_DIR; twice is harmless
    mounts = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounts.append)
    monkeypatch.setitem(sys.modules, "google", sys.modules.get("google") or types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    namespace["OUT"] = "runs/colab-tiny"
    drive_dir = tmp_path / "drive"
    stale = [drive_dir / "runs" / "colab-tiny" / "exp1" / "sweep.lock",
             drive_dir / "base-cache" / "base-0" / "train.lock"]
    for lock in stale:  # left by a runtime that disconnected mid-sweep; its pid may be alive here
        lock.parent.mkdir(parents=True)
        lock.write_text(f"{os.getpid()}\n")
    run_cell(tagged["drive"], namespace)
    assert not any(lock.exists() for lock in stale) and capsys.readouterr().out.count("left by an earlier runtime") == 2
    run_cell(tagged["drive"], namespace)
    assert mounts == ["/content/drive"] * 2
    assert namespace["out_dir"] == str(drive_dir / "runs" / "colab-tiny")
    assert namespace["cache_dir"] == os.environ["PREFIXLAB_CACHE"] == str(drive_dir / "base-cache")
    assert (drive_dir / "base-cache").is_dir() and f"OUT: {drive_dir}/runs/colab-tiny" in capsys.readouterr().out

    # in a notebook (a stand-in IPython): Markdown and Image objects, every png under OUT/figures shown once
    shown = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    display = types.ModuleType("IPython.display")
    display.Markdown = lambda text: ("markdown", text)
    display.Image = lambda filename: ("image", filename)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    namespace["out_dir"] = str(out)
    run_cell(tagged["report"], namespace)
    images = [os.path.relpath(x, out) for kind, x in shown if kind == "image"]
    assert sorted(images) == sorted(str(p.relative_to(out)) for p in (out / "figures").glob("*.png"))
    assert images == ["figures/exp1_accuracy.png", "figures/exp1_attention.png"] and shown[0][0] == "markdown"
    assert shown[0][1].startswith("# Reproduction report") and not any("](figures/" in x for _, x in shown)
