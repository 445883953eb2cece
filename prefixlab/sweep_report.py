"""A run directory's readable outputs, rebuilt from results.jsonl alone: results.csv, summary.md and plots/*.png."""

from __future__ import annotations

import io
import math
import textwrap
from collections import defaultdict
from pathlib import Path

from prefixlab.results import is_tuned, lr_text, method_label, steps_text, summarize, write_csv
from prefixlab.safe_paths import real_dir, replace_bytes

PLOTS = ("accuracy_vs_length.png", "loss_curves.png", "accuracy_vs_params.png")


def _pct(m, half=None) -> str:
    if m is None:
        return "diverged"
    text = f"{100 * m:.1f}"
    if half is not None and not math.isnan(half):
        text += f" [{100 * max(m - half, 0):.1f}, {100 * min(m + half, 1):.1f}]"
    return text


def _dash(v) -> str:
    return "-" if v is None else str(v)


def _tuning(r) -> tuple[str, str]:
    """(lr, steps) cells: the row's own tuning settings, '-' where it was not tuned by gradient."""
    return (lr_text(r), steps_text(r)) if is_tuned(r) else ("-", "-")


def summary_markdown(records: list[dict]) -> str:
    rows = summarize(records)
    head = records[0] if records else {}
    # experiments.report.records_table drops the first four lines: keep the note inside the third
    lines = [
        "# Sweep summary",
        "",
        f"Pretraining: `{head.get('pretrain')}` on `{head.get('model')}` ({head.get('pretrain_steps')} steps); "
        f"{head.get('variant')} task variant for every task. "
        "Exact match and token accuracy in %: mean over seeds, ± sample std, [95 % t-interval of the mean]. "
        "lr and steps are tuning settings: '-' on rows not tuned by gradient (the base `none`, prompt search); "
        "where a grid of learning rates ran, each row is the rate selected on the validation split (several, "
        "joined by '/', where seeds chose differently; results.csv keeps the whole grid), and steps reads "
        "'mean used/budget' where runs stopped early.",
        "",
        "| task | method | len (tokens) | lr | trainable params | steps | exact match % | ± std (pp) "
        "| token acc % | seeds | wall s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = f"{r['n_seeds']}" + (f" ({r['n_diverged']} diverged)" if r["n_diverged"] else "")
        std = "-" if r["exact_match_std"] is None else f"{100 * r['exact_match_std']:.1f}"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        lr, steps = _tuning(r)
        lines.append(
            f"| {r['task']} | {method_label(r)} | {_dash(r['context_len'])} | {lr} | "
            f"{r['trainable_params']:,} | {steps} | {_pct(r['exact_match'], r['exact_match_ci95'])} | {std} | "
            f"{_pct(r['token_accuracy'])} | {seeds} | {wall} |")
    return "\n".join(lines + _cross_table(rows)) + "\n"


def _cross_table(rows: list[dict]) -> list[str]:
    """Each run scored on every task: rows are (tuned on, method, len, lr), so no two rows look alike."""
    crossed = [r for r in rows if r["cross_exact_match"]]
    if not crossed:
        return []
    tasks = sorted({r["task"] for r in rows} | {t for r in crossed for t in r["cross_exact_match"]})
    lines = ["", "## Each tuned run on every task (exact match %, mean over seeds)", "",
             "Rows: tuned on (method and its settings, length, lr); columns: evaluated on. The diagonal is the task "
             "it was tuned for; `none` is the untuned base.",
             "", "| tuned on | method | len (tokens) | lr | " + " | ".join(tasks) + " |",
             "|---|---|---|---|" + "---|" * len(tasks)]
    for r in crossed:
        cells = [_pct(r["exact_match"]) if t == r["task"] else
                 ("-" if t not in r["cross_exact_match"] else _pct(r["cross_exact_match"][t])) for t in tasks]
        lines.append(f"| {r['task']} | {method_label(r)} | {_dash(r['context_len'])} | {_tuning(r)[0]} | "
                     + " | ".join(cells) + " |")
    return lines


# Plots. Every (method, setting) series gets its own colour and marker, the same in every panel of a figure;
# one legend per figure, outside the panels, so it covers no data.
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#7f7f7f")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")  # 11 markers x 10 colours: 110 distinct pairs
_BASE = dict(color="black", marker="", ls=":")  # the untuned base, a reference line in every panel
# series sharing an x are spread apart by this factor each, not overdrawn: lengths (log 2), params (log 10) axes
LENGTH_DODGE, PARAMS_DODGE = 2 ** 0.06, 10 ** 0.1


class _Styles:
    """Series name -> (colour, marker), in the order names are first asked for."""

    def __init__(self):
        self.names = {}

    def __call__(self, name: str) -> dict:
        i = self.names.setdefault(name, len(self.names))
        return dict(color=_COLORS[i % len(_COLORS)], marker=_MARKERS[i % len(_MARKERS)])


def _varied(rows) -> dict[str, set]:
    """{"lr": method labels tuned at more than one lr, "context_len": ... at more than one length}: only their
    series names carry that setting, so a one-length sweep's series have one name (and style) in every plot."""
    seen = defaultdict(set)
    for r in rows:
        for key in ("lr", "context_len"):
            if not (key == "lr" and r.get("lr_selected")):  # a selected rate is a result, not a setting
                seen[key, method_label(r)].add(r.get(key))
    return {key: {m for (k, m), v in seen.items() if k == key and len(v) > 1} for key in ("lr", "context_len")}


def _series_name(r, varied, with_len=False) -> str:
    label = method_label(r)
    name = label
    if with_len and label in varied["context_len"]:
        name += f" P={r['context_len']}"
    if label in varied["lr"] and is_tuned(r):
        name += f" lr {r['lr']:g}"
    return name


def _series(rows, varied) -> dict[str, list[dict]]:
    """Rows by series (method and its settings other than the length), in first-seen order."""
    out = defaultdict(list)
    for r in rows:
        out[_series_name(r, varied)].append(r)
    return out


def _em_with_bars(rs) -> tuple[list, list]:
    """Exact match % and the 95 % t-interval as (lower, upper) bar lengths, clipped to 0..100 like the tables;
    no bar for a single seed."""
    y = [100 * r["exact_match"] for r in rs]
    half = [0.0 if math.isnan(r["exact_match_ci95"]) else 100 * r["exact_match_ci95"] for r in rs]
    return y, [[min(h, v) for h, v in zip(half, y)], [min(h, 100 - v) for h, v in zip(half, y)]]


def _errorbar_series(ax, series, key, factor, styles):
    """Each series' mean exact match with its interval, against `key`; series sharing an x are spread apart by
    `factor` each (an x used by one series stays where it is)."""
    at_x = defaultdict(list)
    for name, rs in series.items():
        for r in rs:
            at_x[r[key]].append(name)
    for name, rs in series.items():
        rs.sort(key=lambda r: r[key])
        xs = [r[key] * factor ** (at_x[r[key]].index(name) - (len(at_x[r[key]]) - 1) / 2) for r in rs]
        y, bars = _em_with_bars(rs)
        ax.errorbar(xs, y, yerr=bars, capsize=3, ms=5, lw=1.3, label=name, **styles(name))


def _grid(plt, n: int, title: str):
    cols = 2 if n == 4 else min(n, 3)  # 2 x 2 rather than 3 + 1
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(4.4 * cols, 6.5), 3.2 * nrows + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.remove()  # no empty panels
    fig.suptitle(textwrap.fill(title, int(13 * fig.get_figwidth())), fontsize=10)  # wrapped to the width
    return fig, list(axes.flat[:n])


def _legend(fig, styles: _Styles):
    """One legend below the panels, in series order (the base last), as many columns as the width holds."""
    handles = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    labels = sorted(handles, key=lambda name: styles.names.get(name, len(styles.names)))
    if labels:
        cols = max(1, min(len(labels), int(fig.get_figwidth() / 2.7)))
        fig.legend([handles[n] for n in labels], labels, loc="outside lower center", fontsize=7, ncols=cols)
    return fig


def _length_ticks(ax, lengths):
    """Log-2 axis with integer ticks at the lengths run, each at least a tenth of the axis from the last, so
    labels never overlap (1, 2, 4, ..., 64 all stay; 57..64 keeps a few)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    gap = (math.log2(lengths[-1] * 1.5) - math.log2(lengths[0] / 1.5)) / 10
    ticks = lengths[:1]
    for p in lengths[1:]:
        if math.log2(p) - math.log2(ticks[-1]) >= gap:
            ticks.append(p)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 1.5)


def _params_ticks(ax, params):
    """Log-10 axis with room for the dodged points; matplotlib's log ticks label the decades, and minor ticks
    only when under a decade is shown, so labels do not crowd."""
    ax.set_xscale("log")
    ax.set_xlim(min(params) / 3, max(params) * 3)


def _base_line(ax, rs):
    for r in rs:
        ax.axhline(100 * r["exact_match"], lw=1, label="none (base, untuned)", **_BASE)


def _ref_line(ax, y, name, style):
    """A method without a length: a dashed line across the panel, its marker at both ends."""
    ax.axhline(y, ls="--", lw=1.2, ms=6, label=name, clip_on=False, **style)


def _accuracy_vs_length(plt, rows, styles, varied):
    with_len = [r for r in rows if r["context_len"] is not None]
    tasks = list(dict.fromkeys(r["task"] for r in with_len))  # only tasks tuned at some length get a panel
    if not tasks:
        return None
    lengths = sorted({r["context_len"] for r in with_len})
    fig, axes = _grid(plt, len(tasks), "Exact match vs context length P: mean over seeds, bars = 95 % t-interval "
                      "of the mean; dashed: methods without a length")
    for ax, task in zip(axes, tasks):
        mine = [r for r in rows if r["task"] == task]
        series = _series([r for r in mine if r["context_len"] is not None], varied)
        _errorbar_series(ax, series, "context_len", LENGTH_DODGE, styles)
        for r in mine:
            if r["context_len"] is None and r["method"] != "none":
                name = _series_name(r, varied)
                _ref_line(ax, 100 * r["exact_match"], name, styles(name))
        _base_line(ax, [r for r in mine if r["method"] == "none"])
        _length_ticks(ax, lengths)
        ax.set(title=task, xlabel="context length P (tokens)", ylabel="exact match %", ylim=(-3, 103))
    return _legend(fig, styles)


def _accuracy_vs_params(plt, rows, styles, varied):
    tuned = [r for r in rows if r["method"] != "none"]
    tasks = list(dict.fromkeys(r["task"] for r in tuned))
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks), "Exact match vs trainable parameters: mean over seeds, bars = 95 % "
                      "t-interval of the mean; a line joins a method's lengths")
    for ax, task in zip(axes, tasks):
        series = _series([r for r in tuned if r["task"] == task], varied)
        _errorbar_series(ax, series, "trainable_params", PARAMS_DODGE, styles)
        _base_line(ax, [r for r in rows if r["task"] == task and r["method"] == "none"])
        _params_ticks(ax, [r["trainable_params"] for r in tuned])
        ax.set(title=task, xlabel="trainable parameters (log scale)", ylabel="exact match %", ylim=(-3, 103))
    return _legend(fig, styles)


def _loss_curves(plt, records, styles, varied):
    """Training loss of every tuned series (each length its own): mean over seeds, band = min..max."""
    curves = defaultdict(list)
    for r in records:
        curve = [math.nan if v is None else v for v in (r.get("loss_curve") or [])]
        # the base's curve is pretraining's; one point (prompt search) or all-NaN (diverged) is no curve
        if r["method"] != "none" and sum(math.isfinite(v) for v in curve) >= 2:
            curves[(r["task"], _series_name(r, varied, with_len=True))].append((curve, r["steps"]))
    tasks = list(dict.fromkeys(t for t, _ in curves))
    if not tasks:
        return None
    fig, axes = _grid(plt, len(tasks), "Training loss while tuning: mean over seeds, band = min..max over seeds")
    for ax, task in zip(axes, tasks):
        for (t, name), cs in curves.items():
            if t != task:
                continue
            n = min(len(c) for c, _ in cs)
            cols = [col for col in zip(*(c[:n] for c, _ in cs))]
            steps = [(i + 0.5) * cs[0][1] / n for i in range(n)]
            style = styles(name)
            ax.plot(steps, [sum(col) / len(col) for col in cols], lw=1.2, ms=4, markevery=max(n // 6, 1),
                    label=name, **style)
            ax.fill_between(steps, [min(col) for col in cols], [max(col) for col in cols], color=style["color"],
                            alpha=0.15, lw=0)
        ax.set(title=task, xlabel="tuning step", ylabel="training loss (nats/token, log)", yscale="log")
    return _legend(fig, styles)


def figures(records: list[dict]) -> dict:
    """{plot file name: matplotlib figure} for each of PLOTS that has data; the caller closes them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summarize(records) if r["exact_match"] is not None]
    varied = _varied([r for r in rows if is_tuned(r)])
    styles = _Styles()  # shared: a series has the same colour and marker in every plot
    figs = {PLOTS[0]: _accuracy_vs_length(plt, rows, styles, varied),
            PLOTS[1]: _loss_curves(plt, records, styles, varied),
            PLOTS[2]: _accuracy_vs_params(plt, rows, styles, varied)}
    return {name: fig for name, fig in figs.items() if fig is not None}


def accuracy_bars(records: list[dict], title: str):
    """A figure of exact match per task, one bar per (method, length) with its 95 % interval over seeds (selected
    runs only); the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summarize(records) if r["exact_match"] is not None]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    several = len({r["context_len"] for r in rows if r["context_len"] is not None}) > 1
    name = lambda r: method_label(r) + (f" P={r['context_len']}" if several and r["context_len"] else "")
    names = list(dict.fromkeys(name(r) for r in rows))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 + 0.35 * len(tasks) * len(names)), 3.8))
    for i, n in enumerate(names):
        at = {r["task"]: r for r in rows if name(r) == n}
        xs = [k + (i - (len(names) - 1) / 2) * width for k, t in enumerate(tasks) if t in at]
        y, bars = _em_with_bars([at[t] for t in tasks if t in at])
        ax.bar(xs, y, width, yerr=bars, capsize=2, label=n)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20 if len(tasks) > 4 else 0, ha="right" if len(tasks) > 4 else "center")
    ax.set(ylabel="exact match % (95 % interval)", ylim=(0, 105), title=textwrap.fill(title, 90))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def measure_plot(series: dict, refs: dict | None = None, xlabel: str = "", ylabel: str = "exact match %",
                 title: str = "", ref_label: str = "reference", log_x: bool = False):
    """The claim's measure against a scanned quantity: `series` {label: [(x, [value per seed]), ...]} (fractions)
    drawn as the mean with its 95 % t-interval as a band; `refs` {series label: (x, fraction)}: the reference's own
    point of that series, a star in its colour. The caller closes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab.results import mean_std_ci

    fig, ax = plt.subplots(figsize=(6.8, 4.0))
    xs_all = set()
    for label, points in series.items():
        stats = [(x, *mean_std_ci([v for v in vs if v is not None])) for x, vs in sorted(points)]
        stats = [(x, m, 0.0 if h is None or math.isnan(h) else h) for x, m, _, h in stats if m is not None]
        if not stats:
            continue
        xs, ms, hs = (list(c) for c in zip(*stats))
        xs_all |= set(xs)
        (line,) = ax.plot(xs, [100 * m for m in ms], marker="o", ms=4, label=label,
                          ls="--" if label.startswith("base") else "-")
        ax.fill_between(xs, [100 * max(m - h, 0) for m, h in zip(ms, hs)], [100 * min(m + h, 1) for m, h in zip(ms, hs)],
                        color=line.get_color(), alpha=0.15, lw=0)
        if label in (refs or {}):
            x, y = refs[label]
            ax.plot([x], [100 * y], marker="*", ms=13, ls="none", color=line.get_color(), mec="k")
            xs_all.add(x)
    if refs:
        ax.plot([], [], marker="*", ms=11, ls="none", color="w", mec="k", label=ref_label)
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(sorted(xs_all), [f"{x:,}" for x in sorted(xs_all)], rotation=30)
        ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel + " (95 % interval)", ylim=(-3, 105), title=textwrap.fill(title, 70))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def validation_series(records: list[dict], label_of) -> dict:
    """{label_of(record): [(step, [validation exact match per seed]), ...]} from the selected runs' val_curve. A
    run that stopped keeps its last value at later steps: its parameters no longer change."""
    from prefixlab.selection import selected

    curves = defaultdict(list)
    for r in selected(records):
        if r.get("val_curve") and r["val_curve"]["step"]:
            curves[label_of(r)].append(dict(zip(r["val_curve"]["step"], r["val_curve"]["exact_match"])))
    out = {}
    for label, runs in curves.items():
        steps = sorted({s for c in runs for s in c})
        last = lambda c, s: c[max(t for t in c if t <= s)] if min(c) <= s else None
        out[label] = [(s, [last(c, s) for c in runs]) for s in steps]
    return out


def save_figure(fig, path: Path, **kwargs) -> None:
    """fig.savefig into a new file renamed over `path`: a link there is replaced, never written through."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    replace_bytes(path, buffer.getvalue())


def _plots(records: list[dict], plot_dir: Path) -> list[Path]:
    """Writes the plots that have data; one without data is not written, and an old file of it is removed."""
    import matplotlib.pyplot as plt

    real_dir(plot_dir)  # a link there is replaced by a folder, so no plot lands where it points
    figs = figures(records)
    for name in set(PLOTS) - set(figs):
        (plot_dir / name).unlink(missing_ok=True)
    for name, fig in figs.items():
        save_figure(fig, plot_dir / name, dpi=110)
        plt.close(fig)
    return [plot_dir / name for name in figs]


def write_report(out: Path, records: list[dict]) -> list[Path]:
    """Writes results.csv, summary.md and plots/ for a run directory, each as a new file (a link at any of them is
    replaced, never written through); returns the files written."""
    out = Path(out)
    write_csv(out / "results.csv", records)
    replace_bytes(out / "summary.md", summary_markdown(records).encode())
    return [out / "results.csv", out / "summary.md", *_plots(records, out / "plots")]
