"""A run directory's readable outputs, rebuilt from results.jsonl alone: results.csv, summary.md and plots/*.png."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from prefixlab.results import method_label, summarize, write_csv

PLOTS = ("accuracy_vs_length.png", "loss_curves.png", "accuracy_vs_params.png")


def _pct(m, half=None) -> str:
    if m is None:
        return "diverged"
    text = f"{100 * m:.1f}"
    if half is not None and not math.isnan(half):
        text += f" [{100 * max(m - half, 0):.1f}, {100 * min(m + half, 1):.1f}]"
    return text


def summary_markdown(records: list[dict]) -> str:
    rows = summarize(records)
    head = records[0] if records else {}
    lines = [
        "# Sweep summary",
        "",
        f"Pretraining: `{head.get('pretrain')}` on `{head.get('model')}` ({head.get('pretrain_steps')} steps). "
        "Exact match and token accuracy in %: mean over seeds, ± sample std, [95 % t-interval of the mean].",
        "",
        "| task | method | len | rank | lr | trainable params | steps | exact match % | ± std | token acc % | seeds | wall s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dash = lambda v: "-" if v is None else str(v)
    for r in rows:
        seeds = f"{r['n_seeds']}" + (f" ({r['n_diverged']} diverged)" if r["n_diverged"] else "")
        std = "-" if r["exact_match_std"] is None else f"{100 * r['exact_match_std']:.1f}"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        lines.append(
            f"| {r['task']} | {method_label(r)} | {dash(r['context_len'])} | {dash(r['lora_rank'])} | "
            f"{'-' if not r['lr'] else format(r['lr'], 'g')} | {r['trainable_params']:,} | {dash(r['steps'])} | "
            f"{_pct(r['exact_match'], r['exact_match_ci95'])} | {std} | {_pct(r['token_accuracy'])} | {seeds} | {wall} |")
    crossed = [r for r in rows if r["cross_exact_match"]]
    if crossed:
        tasks = sorted({r["task"] for r in rows})
        lines += ["", "## Each tuned run on every task (exact match %, mean over seeds)", "",
                  "Rows: tuned on (method, length); columns: evaluated on. The diagonal is the task it was tuned for.",
                  "", "| tuned on | method | len | " + " | ".join(tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
        for r in crossed:
            cells = [_pct(r["exact_match"]) if t == r["task"] else
                     ("-" if r["cross_exact_match"].get(t, "absent") == "absent" else _pct(r["cross_exact_match"][t]))
                     for t in tasks]
            lines.append(f"| {r['task']} | {method_label(r)} | {dash(r['context_len'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plots(records: list[dict], plot_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in summarize(records) if r["exact_match"] is not None]
    tasks = sorted({r["task"] for r in rows})
    written = []

    def grid(n):
        cols = min(n, 3)
        fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.5 * cols, 3.4 * math.ceil(n / cols)),
                                 squeeze=False)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        return fig, list(axes.flat)

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(plot_dir / name, dpi=110)
        plt.close(fig)
        written.append(plot_dir / name)

    # accuracy vs context length, per task and method (mean with the 95 % interval)
    fig, axes = grid(max(len(tasks), 1))
    for ax, task in zip(axes, tasks):
        by_method = defaultdict(list)
        for r in rows:
            if r["task"] == task and r["context_len"] is not None:
                by_method[(method_label(r), r["lr"])].append(r)
        for (label, lr), rs in sorted(by_method.items()):
            rs.sort(key=lambda r: r["context_len"])
            ci = [0 if math.isnan(r["exact_match_ci95"]) else 100 * r["exact_match_ci95"] for r in rs]
            ax.errorbar([r["context_len"] for r in rs], [100 * r["exact_match"] for r in rs], yerr=ci, marker="o",
                        capsize=3, label=f"{label} lr {lr:g}")
        for r in rows:  # methods without a length, as reference lines
            if r["task"] == task and r["context_len"] is None:
                ax.axhline(100 * r["exact_match"], ls="--", lw=1, color="gray" if r["method"] == "none" else None,
                           label=method_label(r) + (f" r{r['lora_rank']}" if r["lora_rank"] else ""))
        ax.set(title=task, xlabel="context length P", ylabel="exact match %", ylim=(-3, 103))
        ax.legend(fontsize=7)
    save(fig, PLOTS[0])

    # training-loss curves: mean over seeds, band = min..max
    curves = defaultdict(list)
    for r in records:
        if r.get("loss_curve") and r["method"] != "none":
            curves[(r["task"], method_label(r), r.get("context_len"), r.get("lora_rank"), r["lr"])].append(
                (r["loss_curve"], r["steps"]))
    fig, axes = grid(max(len(tasks), 1))
    for ax, task in zip(axes, tasks):
        for (t, label, p, rank, lr), cs in sorted(curves.items(), key=str):
            if t != task:
                continue
            n = min(len(c) for c, _ in cs)
            vals = [[math.nan if v is None else v for v in c[:n]] for c, _ in cs]
            steps = [(i + 0.5) * cs[0][1] / n for i in range(n)]
            mean = [sum(col) / len(col) for col in zip(*vals)]
            name = label + (f" P={p}" if p else "") + (f" r={rank}" if rank else "") + f" lr {lr:g}"
            line, = ax.plot(steps, mean, label=name)
            ax.fill_between(steps, [min(col) for col in zip(*vals)], [max(col) for col in zip(*vals)],
                            color=line.get_color(), alpha=0.2)
        ax.set(title=task, xlabel="tuning step", ylabel="training loss", yscale="log")
        ax.legend(fontsize=6)
    save(fig, PLOTS[1])

    # accuracy vs trainable parameters
    fig, axes = grid(max(len(tasks), 1))
    for ax, task in zip(axes, tasks):
        by_method = defaultdict(list)
        for r in rows:
            if r["task"] == task and r["method"] != "none":
                by_method[method_label(r)].append(r)
        for label, rs in sorted(by_method.items()):
            ax.scatter([r["trainable_params"] for r in rs], [100 * r["exact_match"] for r in rs], label=label)
        ax.set(title=task, xlabel="trainable parameters", ylabel="exact match %", xscale="log", ylim=(-3, 103))
        ax.legend(fontsize=7)
    save(fig, PLOTS[2])
    return written


def write_report(out: Path, records: list[dict]) -> list[Path]:
    """Writes results.csv, summary.md and plots/ for a run directory; returns the files written."""
    out = Path(out)
    write_csv(out / "results.csv", records)
    (out / "summary.md").write_text(summary_markdown(records))
    return [out / "results.csv", out / "summary.md", *_plots(records, out / "plots")]
