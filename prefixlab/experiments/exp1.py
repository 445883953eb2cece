"""Experiment 1 (Petrov et al.): a base pretrained on sort_asc, tuned to sort_desc; a prefix cannot, LoRA and full
fine-tuning can."""

from __future__ import annotations

from pathlib import Path

from prefixlab.claim import Claim
from prefixlab.experiments.claims import em, mean, pct, protocol
from prefixlab.experiments.profiles import PROFILES
from prefixlab.experiments.report import records_table
from prefixlab.experiments.sections import section
from prefixlab.sweep import SweepConfig
from prefixlab.sweep_report import save_figure

TASKS = ("sort_asc", "sort_desc")
TITLE = "Experiment 1: sort ascending → sort descending"


def configs(profile: str) -> dict[str, SweepConfig]:
    prof = PROFILES[profile]
    model, pre, tune = prof["exp1"]
    return {"exp1": SweepConfig(model=model, pretrain="sort_asc", tasks=TASKS, tune_tasks=prof["exp1_tune_tasks"],
                                methods=("none", "prefix", "soft_prompt", "lora", "full"), pretrain_steps=pre,
                                tune_steps=tune, seeds=prof["seeds"], eval_samples=prof["eval"], cross_eval=False,
                                lr_grid=prof["lr_grid"])}


def claims(records, profile: str) -> list[Claim]:
    how = protocol(configs(profile)["exp1"], records)
    base = em(records, task="sort_asc", method="none")
    out = [Claim("exp1: pretrained on sort_asc", pct(base), "91.4 %", mean(base) >= 0.9, how)]
    for method, ref, ok in (("prefix", "0.0 %", lambda m: m <= 0.05),
                            ("soft_prompt", "(prefix ⊃ soft prompt)", lambda m: m <= 0.05),
                            ("lora", "LoRA can (exp4: 92.4 %)", lambda m: m >= 0.8),
                            ("full", "84.9 %", lambda m: m >= 0.8)):
        xs = em(records, task="sort_desc", method=method)
        out.append(Claim(f"exp1: {method} tuned to sort_desc", pct(xs), ref, ok(mean(xs)), how))
    return out


@section("exp1", configs=configs)
def run(repro) -> None:
    records = repro.sweep("exp1", configs(repro.profile)["exp1"])
    repro.report.add(claims(records, repro.profile))
    fig = attention_figure(repro.out / "exp1", repro.report.figures / "exp1_attention.png")
    repro.report.section(TITLE, repro.timing.so_far(), records_table(records) + "\n\n" +
                         repro.report.accuracy("exp1", records, "exp 1: exact match of each method") +
                         f"\n\n![attention maps]({fig.relative_to(repro.out)})\n\nAttention of the pretrained, "
                         "fully fine-tuned and prefix-tuned (P = 1) models on one sort_desc input (seed 0, content "
                         "rows; the prefix model's first column is the prefix slot). Fine-tuning changes the pattern; "
                         "the prefix can only take attention away from the content, uniformly per row.")


def attention_figure(run_dir: Path, path: Path) -> Path:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefixlab import tasks as T
    from prefixlab.analysis import attention_maps, load_run

    run = load_run(run_dir)
    batch = T.parse_mixture("sort_desc").batch(jax.random.key(7), 1, split="test")
    tokens = batch.tokens_BT
    panels = [("pretrained (sort_asc)", run.base_model(0), None),
              ("full fine-tuning → sort_desc", *run.model("sort_desc", "full", 0)),
              ("prefix P=1 → sort_desc", *run.model("sort_desc", "prefix", 0, context_len=1))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (title, model, ctx) in zip(axes, panels):
        probs = attention_maps(model, tokens, ctx)[0][0, 0]
        P = 0 if ctx is None else ctx.length
        ax.imshow(probs[P:, :], cmap="viridis", vmin=0, vmax=1)
        ax.set(title=title, xlabel="key position" + (" (col 0 = prefix)" if P else ""), ylabel="query position")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
