import subprocess
import sys
from pathlib import Path

from prefixlab.report import PLOTS, summary_markdown, write_report
from prefixlab.results import append_jsonl

REPORT = Path(__file__).resolve().parent.parent / "scripts" / "report.py"


def records():
    out = []
    for seed in range(3):
        for method, p, em in (("prefix", 1, 0.1), ("prefix", 4, 0.5), ("lora", None, 0.9), ("none", None, 0.0)):
            out.append(dict(pretrain="sort_asc", model="tiny", pretrain_steps=10, task="sort_desc", method=method,
                            context_len=p, lora_rank=1 if method == "lora" else None, lora_targets=None, lr=1e-3,
                            seed=seed, exact_match=em + 0.01 * seed, token_accuracy=em, trainable_params=10 * (p or 9),
                            steps=20, wall_s=1.0, status="ok", loss_curve=[2.0, 1.0, 0.5 + seed],
                            cross_exact_match={"sort_asc": 0.02}))
    return out


def test_summary_has_interval_and_cross_matrix():
    text = summary_markdown(records())
    # prefix P=4: mean 51.0, std 1.0, 95 % half-width 4.303 * 1 / sqrt(3) = 2.48
    assert "| sort_desc | prefix | 4 | - | 0.001 | 40 | 20 | 51.0 [48.5, 53.5] | 1.0 |" in text
    assert "## Each tuned run on every task" in text and "| sort_desc | lora:" not in text.split("##")[0][:0]


def test_report_script_rebuilds_from_results_alone(tmp_path):
    append_jsonl(tmp_path / "results.jsonl", records())
    r = subprocess.run([sys.executable, str(REPORT), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "summary.md").read_text() == summary_markdown(records())
    assert all((tmp_path / "plots" / name).stat().st_size > 5000 for name in PLOTS)
    assert (tmp_path / "results.csv").read_text().count("\n") == len(records()) + 1


def test_report_script_refuses_a_missing_directory(tmp_path):
    r = subprocess.run([sys.executable, str(REPORT), str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_report_script_refuses_bad_lines_before_writing(tmp_path, capsys):
    from tests.helpers import load_script

    main = load_script(REPORT).main
    for bad, needle in (('[1, 2]\n', "line 13: a list, not a record object"),
                        ('{"task": "add1"}\n', "line 13: record without method")):
        (tmp_path / "results.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in records()) + bad)
        try:
            main([str(tmp_path)])
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "results.csv").exists() and not (tmp_path / "summary.md").exists()


def test_write_report_lists_its_files(tmp_path):
    files = write_report(tmp_path, records())
    assert {f.name for f in files} == {"results.csv", "summary.md", *PLOTS}
