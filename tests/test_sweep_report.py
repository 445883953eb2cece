import subprocess
import sys
from pathlib import Path

import pytest

from prefixlab.sweep_report import PLOTS, figures, summary_markdown, write_report
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
    assert "| sort_desc | prefix | 4 | 0.001 | 40 | 20 | 51.0 [48.5, 53.5] | 1.0 |" in text
    assert "| sort_desc | none | - | - | 90 | - |" in text  # the base's lr and steps are pretraining's
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


def sweep_records(tasks=("sort_desc",), eval_only=("add1",)):
    """Prefix at three lengths, LoRA at ranks 1 and 4 (two groups), prompt search and the base, 3 seeds; `eval_only`
    tasks have only the base's records (scored, never tuned), as in the extended-tasks experiment."""
    out = []
    runs = [("prefix", p, None, 5e-3, 0.2 * i) for i, p in enumerate((1, 4, 16))]
    runs += [("lora", None, rank, 5e-3, 0.9) for rank in (1, 4)] + [("prompt", 2, None, 0.0, 0.1)]
    for task in tasks:
        for method, p, rank, lr, em in runs + [("none", None, None, 5e-4, 0.05)]:
            for seed in range(3):
                tag = f"lora-r{rank}-ofc" if rank else method
                out.append(dict(pretrain="sort_asc", model="tiny", pretrain_steps=100, task=task, method=method,
                                group=f"{task}/{tag}", context_len=p, lr=lr, seed=seed,
                                exact_match=em + 0.01 * seed, token_accuracy=em, trainable_params=32 * (p or rank or 9),
                                steps=100 if method == "none" else 20, wall_s=1.0, status="ok",
                                loss_curve=[2.0, 1.0, 0.5] if method not in ("none", "prompt") else [0.3],
                                cross_exact_match={t: 0.02 for t in eval_only}))
    for task in eval_only:
        out += [dict(out[-1], task=task, method="none", group=f"{task}/none", context_len=None, lr=5e-4, steps=100,
                     seed=seed) for seed in range(3)]
    return out


def legend(fig) -> dict:
    """Legend label -> (colour, marker) of the figure's one legend."""
    from matplotlib.container import ErrorbarContainer

    (leg,) = fig.legends  # one per figure, with every panel's series once
    out = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            line = h.lines[0] if isinstance(h, ErrorbarContainer) else h
            style = (line.get_color(), line.get_marker())
            assert out.setdefault(label, style) == style  # a series looks the same in every panel
    assert {t.get_text() for t in leg.get_texts()} == set(out)
    return out


@pytest.mark.filterwarnings("error")  # a matplotlib warning (empty legend, log of 0, ...) fails the test
def test_eval_only_task_has_no_panel_and_each_setting_its_own_style():
    import matplotlib.pyplot as plt

    figs = figures(sweep_records())
    try:
        for name, fig in figs.items():
            assert [ax.get_title() for ax in fig.axes] == ["sort_desc"], name  # no add1 panel: it was not tuned
        by_name = legend(figs["accuracy_vs_length.png"])
        assert {"lora-r1-ofc", "lora-r4-ofc", "prefix", "prompt"} <= set(by_name)
        styles = [s for n, s in by_name.items() if not n.startswith("none")]
        assert len(set(c for c, _ in styles)) == len(styles) and len(set(m for _, m in styles)) == len(styles)
        assert legend(figs["accuracy_vs_params.png"])["lora-r4-ofc"] == by_name["lora-r4-ofc"]
        losses = legend(figs["loss_curves.png"])
        assert {"prefix P=1", "prefix P=4", "prefix P=16", "lora-r1-ofc", "lora-r4-ofc"} == set(losses)
        assert len(set(losses.values())) == len(losses)  # prompt search (one loss value) has no curve
        ax = figs["accuracy_vs_length.png"].axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "16"]  # integer lengths run
    finally:
        plt.close("all")


def test_base_only_sweep_writes_no_empty_plot(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss_curves.png").write_bytes(b"stale")
    base = [r for r in sweep_records() if r["method"] == "none"]
    assert write_report(tmp_path, base) == [tmp_path / "results.csv", tmp_path / "summary.md"]
    assert not list((tmp_path / "plots").iterdir())


def test_untuned_rows_show_no_tuning_settings_and_each_group_its_row():
    text = summary_markdown(sweep_records())
    main, cross = text.split("## Each tuned run")
    # the base's lr and steps are pretraining's, prompt search has none: both '-'
    assert "| sort_desc | none | - | - | 288 | - | 6.0 [3.5, 8.5] |" in main
    assert "| sort_desc | prompt | 2 | - | 64 | - |" in main
    assert "| sort_desc | lora-r4-ofc | - | 0.005 | 128 | 20 |" in main
    assert "| tuned on | method | len (tokens) | lr | add1 | sort_desc |" in cross
    assert "| sort_desc | lora-r1-ofc | - | 0.005 | 2.0 | 91.0 |" in cross
    assert "| sort_desc | lora-r4-ofc | - | 0.005 | 2.0 | 91.0 |" in cross


def test_many_lengths_get_thinned_integer_ticks():
    import matplotlib.pyplot as plt

    recs = [dict(r, context_len=p, seed=p) for r in sweep_records() if r["method"] == "prefix" for p in range(1, 21)]
    fig = figures(recs)["accuracy_vs_length.png"]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close("all")
    assert labels == ["1", "2", "3", "5", "8", "12", "18"]  # no two within a tenth of the axis


def test_accuracy_bars_one_bar_per_setting_with_its_interval():
    import matplotlib.pyplot as plt

    from prefixlab.sweep_report import accuracy_bars

    fig = accuracy_bars(records(), "title")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [1.0, 11.0, 51.0, 91.0]  # base, prefix P=1, P=4, LoRA: mean over 3 seeds, in %
    caps = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    assert len(caps) == 4  # each bar carries its 95 % interval
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sort_desc"]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"prefix P=1", "prefix P=4", "lora", "none"}
    plt.close(fig)


def test_validation_series_carries_a_stopped_runs_last_value_forward():
    from prefixlab.sweep_report import validation_series

    curve = lambda steps, em: {"step": steps, "loss": [1.0] * len(steps), "exact_match": em}
    recs = [dict(method="lora", seed=0, val_curve=curve([250, 500], [0.5, 1.0])),  # solved at 500, stopped
            dict(method="lora", seed=1, val_curve=curve([250, 500, 750], [0.1, 0.2, 0.4])),
            dict(method="lora", seed=2, selected=False, val_curve=curve([250], [0.9])),  # not selected: left out
            dict(method="none", seed=0)]  # untrained: no curve
    assert validation_series(recs, lambda r: r["method"]) == {
        "lora": [(250, [0.5, 0.1]), (500, [1.0, 0.2]), (750, [1.0, 0.4])]}


def test_measure_plot_draws_each_series_mean_and_its_reference_star_in_its_colour():
    import matplotlib.pyplot as plt

    from prefixlab.sweep_report import measure_plot

    fig = measure_plot({"prefix": [(2000, [0.1, 0.3]), (8000, [0.5, 0.7])], "base": [(2000, [0.0]), (8000, [0.2])]},
                       {"prefix": (20000, 0.9)}, "steps", log_x=True)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["prefix"].get_ydata()) == pytest.approx([20.0, 60.0])
    star = [ln for ln in ax.get_lines() if ln.get_marker() == "*" and len(ln.get_xdata())][0]
    assert list(star.get_xdata()) == [20000] and star.get_color() == lines["prefix"].get_color()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2,000", "8,000", "20,000"]
    plt.close(fig)


def test_report_script_only_reads_and_replaces_links_instead_of_writing_through(tmp_path, capsys):
    """A garbage line mid-file and a torn last line are warnings naming their lines (results.jsonl is left as it
    is: repairing is --resume's job); results.csv, summary.md and plots/ linked elsewhere are replaced as links."""
    import json
    import os

    from tests.helpers import load_script

    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (outside / "theirs.txt").write_text("keep")
    lines = [json.dumps(r) + "\n" for r in records()]
    data = "".join(lines[:3] + ["garbage\n"] + lines[3:]) + '{"task": "sort_desc", "meth'
    (run / "results.jsonl").write_text(data)
    for name in ("results.csv", "summary.md"):
        (run / name).symlink_to(outside / "theirs.txt")
    (run / "plots").symlink_to(outside)
    assert load_script(REPORT).main([str(run)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "line 4: not JSON" in err[0] and f"line {len(lines) + 2}: not JSON" in err[1]
    assert (run / "results.jsonl").read_text() == data
    assert os.listdir(outside) == ["theirs.txt"] and (outside / "theirs.txt").read_text() == "keep"
    assert (run / "summary.md").read_text() == summary_markdown(records()) and not (run / "plots").is_symlink()
