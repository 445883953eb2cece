"""Experiment 2 (Petrov et al.): one prefix per task on a mixture-pretrained base; each prefix selects its own
pretrained skill and leaves the content attention's pattern unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefixlab.claim import Claim
from prefixlab.experiments.claims import cross, em, hierarchy, mean, pct, protocol
from prefixlab.experiments.profiles import MIX, PROFILES
from prefixlab.experiments.report import records_table
from prefixlab.experiments.sections import section
from prefixlab.sweep import SweepConfig
from prefixlab.sweep_report import save_figure

TASKS = MIX.split(",")
TITLE = "Experiment 2: one prefix per task on a mixture-pretrained model"
# the prefix inits: the reference's N(0, 1) and the base's own activations (= the soft prompt at init)
PREFIX_TAGS = {"normal": "prefix", "sample_vocab": "prefix-sample_vocab"}  # init -> group tag in the run dir
REFS = {"sort_asc": "94.1 %", "sort_desc": "83.7 %", "add1": "99.6 %", "add2": "99.8 %"}
BASE_REFS = {"sort_asc": "≈ 31 %", "sort_desc": "≈ 19 %", "add1": "≈ 30 %", "add2": "≈ 16 %"}


def configs(profile: str) -> dict[str, SweepConfig]:
    prof = PROFILES[profile]
    model, pre, tune = prof["exp2"]
    return {"exp2": SweepConfig(model=model, pretrain=MIX, tasks=MIX, methods=("none", "prompt", "soft_prompt", "prefix"),
                                prefix_lengths=(1,), tune_lr={"prefix": (5e-3,)},
                                settings={"prefix": {"init_mode": tuple(prof["exp2_inits"])}},
                                pretrain_steps=pre, tune_steps=tune, seeds=prof["seeds"], eval_samples=prof["eval"],
                                lr_grid=prof["lr_grid"], shared_base=prof.get("shared_base", False))}


def claims(records, profile: str) -> list[Claim]:
    how = protocol(configs(profile)["exp2"], records)
    out = []
    for init in PROFILES[profile]["exp2_inits"]:
        for t in TASKS:
            own = em(records, task=t, method="prefix", init=init)
            others = [x for o in TASKS if o != t for x in cross(records, t, o, method="prefix", init=init)]
            out.append(Claim(f"exp2: prefix P=1 (init {init}) for {t}: own task / the other three",
                             f"{pct(own)} / max {100 * max(others):.1f} %", f"{REFS[t]} / ≈ 0 %",
                             mean(own) >= 0.8 and max(others) <= 0.05, how))
    for t in TASKS:
        out.append(Claim(f"exp2: mixture base, no prefix, on {t}", pct(em(records, task=t, method="none")),
                         BASE_REFS[t], None, how))
    out.append(hierarchy("hierarchy on the mixture, 1 layer, P = 1: hard prompt ⊂ soft prompt ⊂ prefix (the prefix "
                         "that starts as the soft prompt)", records,
                         [("prompt", dict(method="prompt")), ("soft prompt", dict(method="soft_prompt")),
                          ("prefix", dict(method="prefix", init="sample_vocab"))], TASKS,
                         note=" (in a one-layer model a prefix and a soft prompt are the same parameterisation)",
                         protocol=how))
    return out


def shift_claim(shift, n_inits: int, seeds: int) -> Claim:
    """The content attention with the prefix columns removed and renormalised vs without a prefix."""
    return Claim("exp2: content attention, prefix columns removed and renormalised, equals no-prefix attention",
                 f"max |Δ| = {shift.max_abs:.1e} over {shift.rows:,} query rows ({n_inits} init(s) × 4 prefixes × "
                 f"{seeds} seeds × 64 inputs × heads × positions; {shift.skipped:,} rows skipped: the prefix took all "
                 "their attention)", "identical", shift.max_abs <= 1e-5, "64 mixture test inputs per seed")


def matrix(records, init: str) -> str:
    """Exact match of each task's prefix on every task, as a markdown table."""
    rows = [f"Prefix init `{init}`:", "", "| prefix tuned on | " + " | ".join(TASKS) + " |",
            "|---" * (len(TASKS) + 1) + "|"]
    for t in TASKS:
        rows.append(f"| {t} | " + " | ".join(
            pct(em(records, task=t, method="prefix", init=init)) if o == t
            else pct(cross(records, t, o, method="prefix", init=init)) for o in TASKS) + " |")
    return "\n".join(rows)


@section("exp2", configs=configs)
def run(repro) -> None:
    inits = PROFILES[repro.profile]["exp2_inits"]
    records = repro.sweep("exp2", configs(repro.profile)["exp2"])
    repro.report.add(claims(records, repro.profile))
    shift, (fig, heads, rescaling) = figures(repro.out / "exp2", inits, repro.report.figures)
    repro.report.add([shift_claim(shift, len(inits), PROFILES[repro.profile]["seeds"])])
    repro.report.section(TITLE, repro.timing.so_far(),
                         records_table(records) + "\n\n" +
                         repro.report.accuracy("exp2", records, "exp 2: exact match on each task (mixture base)") +
                         "\n\nExact match of each task's prefix on every task (mean [95 % "
                         "interval]):\n\n" + "\n\n".join(matrix(records, i) for i in inits)
                         + f"\n\n![Figure 3]({fig.relative_to(repro.out)})\n\nAttention-block output at the last input "
                         "position for 20 inputs (PCA of all points), without a prefix and with each task's prefix "
                         "(init sample_vocab): each prefix moves the points towards its own cluster (seed 0)."
                         f"\n\n![Figure 2]({heads.relative_to(repro.out)})\n\nThe share of attention each task's "
                         "prefix takes, per head (64 mixture inputs, content rows, seed 0): which heads a prefix "
                         "acts on to select its skill."
                         f"\n\n![Figure 5]({rescaling.relative_to(repro.out)})\n\nOne input, head 0, the sort_asc "
                         "prefix: the attention with the prefix, its content part renormalised, and the base's "
                         "attention without a prefix. The last two are equal: the prefix only rescales each row.")


def figures(run_dir: Path, inits, figures_dir: Path):
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab import tasks as T
    from prefixlab.analysis import AttentionShift, attention_block_outputs, content_attention_shift, load_run

    run = load_run(run_dir)
    tokens = T.parse_mixture(MIX).batch(jax.random.key(3), 64, split="test").tokens_BT
    shifts = []
    for s in run.seeds:
        ctxs = [run.model(t, PREFIX_TAGS[i], s, context_len=1)[1] for t in TASKS for i in inits]
        shifts.append(content_attention_shift(run.base_model(s), tokens, ctxs))
    shift = AttentionShift(max(x.max_abs for x in shifts), sum(x.rows for x in shifts), sum(x.skipped for x in shifts))
    points = {"no prefix": attention_block_outputs(run.base_model(0), tokens[:20], None, 9)}
    for t in TASKS:
        model, ctx = run.model(t, PREFIX_TAGS["sample_vocab"], 0, context_len=1)
        points[t] = attention_block_outputs(model, tokens[:20], ctx, 9)
    allp = np.concatenate(list(points.values()))
    mu = allp.mean(0)
    _, _, vt = np.linalg.svd(allp - mu, full_matrices=False)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, p in points.items():
        xy = (p - mu) @ vt[:2].T
        ax.scatter(xy[:, 0], xy[:, 1], s=14, label=name, marker="x" if name == "no prefix" else "o")
    ax.set(title="attention-block output, last input position", xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = figures_dir / "exp2_block_outputs.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return shift, [path, head_figure(run, tokens, plt, figures_dir), rescaling_figure(run, tokens, plt, figures_dir)]


def head_figure(run, tokens_BT, plt, figures_dir: Path) -> Path:
    """Figure 2-style: per head, the attention share each task's prefix takes (mean over inputs and content
    rows, seed 0): a prefix acts on the heads of its own skill."""
    from prefixlab.analysis import attention_maps

    share_TH = []
    for t in TASKS:
        model, ctx = run.model(t, PREFIX_TAGS["sample_vocab"], 0, context_len=1)
        probs_BHSS = attention_maps(model, tokens_BT, ctx)[0]
        share_TH.append(probs_BHSS[:, :, 1:, 0].mean(axis=(0, 2)))  # content rows, the prefix column
    share_TH = np.stack(share_TH)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    im = ax.imshow(share_TH, cmap="magma", vmin=0, vmax=max(share_TH.max(), 1e-6))
    ax.set(xticks=range(share_TH.shape[1]), yticks=range(len(TASKS)), yticklabels=TASKS, xlabel="head",
           title="attention share on the prefix slot, per head (mixture base, layer 0)")
    for (i, j), v in np.ndenumerate(share_TH):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 * share_TH.max() else "k")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = figures_dir / "exp2_heads.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def rescaling_figure(run, tokens_BT, plt, figures_dir: Path) -> Path:
    """Figure 5-style, one input (seed 0, the sort_asc prefix, head 0): attention with the prefix, its content
    columns renormalised, and the base's attention without a prefix; the last two are equal."""
    from prefixlab.analysis import attention_maps

    model, ctx = run.model("sort_asc", PREFIX_TAGS["sample_vocab"], 0, context_len=1)
    with_SS = attention_maps(model, tokens_BT[:1], ctx)[0][0, 0][1:]  # content rows; column 0 is the prefix
    renorm_SS = with_SS[:, 1:] / with_SS[:, 1:].sum(-1, keepdims=True)
    base_SS = attention_maps(run.base_model(0), tokens_BT[:1], None)[0][0, 0]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (title, a) in zip(axes, (("with prefix (col 0 = prefix)", with_SS), ("content renormalised", renorm_SS),
                                     (f"base, no prefix (max |Δ| {np.abs(renorm_SS - base_SS).max():.1e})", base_SS))):
        ax.imshow(a, cmap="viridis", vmin=0, vmax=1)
        ax.set(title=title, xlabel="key position", ylabel="query position")
    fig.tight_layout()
    path = figures_dir / "exp2_rescaling.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
