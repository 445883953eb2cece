"""Inits as an axis (issue 35, item 4): how a context method starts, on the exp 2 mixture base.

PEFT's own benchmark moves prefix-tuning from 18.6 % to 41.6 % by its init alone. Here soft prompt, prefix and
PEFT's prefix_kv start from each of: N(0, 1) (`random` / `normal`), the embeddings or the base's own activations
for sampled tokens (`sample_vocab`), zero (`zero`), and a text (`vocab` / `text`: for prefix_kv the keys and values
the base computes for it, a "cartridge"). The text is the last P tokens of one training demonstration of the task,
so it ends in the task's own output. One sweep per task, because the text is a method setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from prefixlab import tasks as T
from prefixlab.claim import Claim
from prefixlab.experiments.claims import em, mean, pct, protocol
from prefixlab.experiments.profiles import MIX, PROFILES
from prefixlab.experiments.report import records_table
from prefixlab.experiments.sections import section
from prefixlab.selection import selected
from prefixlab.sweep import SweepConfig
from prefixlab.sweep_report import save_figure

TITLE = "Inits as an axis: how a soft prompt, a prefix and PEFT's prefix start"
TASKS = ("sort_desc", "add2")  # exp 2's hardest elicitation and an elementwise one
P = 4
# method -> its init names, in the table's order: N(0, 1), sampled tokens, zero, a text
INITS = {"soft_prompt": ("random", "sample_vocab", "zero", "vocab"),
         "prefix": ("normal", "sample_vocab", "zero", "text"),
         "prefix_kv": ("normal", "sample_vocab", "zero", "text")}
KINDS = ("N(0, 1)", "sampled tokens", "zero", "text")
PEFT_SPREAD = 0.10  # PEFT's benchmark: 18.6 % -> 41.6 % by init alone; "init matters" = a spread of >= 10 pp


def text(task: str, length: int = P) -> tuple[int, ...]:
    """The last `length` tokens of the task's first training demonstration (input, then output)."""
    batch = T.parse_mixture(task).batch(jax.random.key(0), 1, split="train")
    seq = np.concatenate([np.asarray(batch.tokens_BT[0]), np.asarray(batch.targets_BT[0, -1:])])
    return tuple(int(t) for t in seq[-length:])


def configs(profile: str) -> dict[str, SweepConfig]:
    prof = PROFILES[profile]
    model, pre, tune = prof["exp2"]  # exp 2's base (the cache shares it) and budget
    out = {}
    for task in TASKS:
        tokens = text(task)
        settings = {m: {"init_mode": inits} for m, inits in INITS.items()}
        for method in INITS:
            settings[method]["init_tokens"] = [tokens]  # one value (a list of tuples: several values)
        out[f"inits-{task}"] = SweepConfig(
            model=model, pretrain=MIX, tasks=MIX, tune_tasks=(task,), methods=("none", *INITS), prefix_lengths=(P,),
            settings=settings, pretrain_steps=pre, tune_steps=tune, seeds=prof["seeds"], eval_samples=prof["eval"],
            lr_grid=(1.0,), shared_base=prof.get("shared_base", False))
    return out




def table(records) -> dict[tuple[str, str, str], list[float]]:
    """{(task, method, init kind): exact match per seed} of the selected runs."""
    out = {}
    for task in TASKS:
        for method, inits in INITS.items():
            for init, kind in zip(inits, KINDS):
                out[task, method, kind] = [r["exact_match"] for r in _matching(records, task, method, init)]
    return out


def _matching(records, task, method, init):
    return [r for r in selected(records) if r["task"] == task and r["method"] == method and r.get("init") == init]


def claims(records, profile: str) -> list[Claim]:
    how = protocol(next(iter(configs(profile).values())), records)
    cells = table(records)
    out = []
    for task in TASKS:
        for method in INITS:
            means = {kind: mean(cells[task, method, kind]) for kind in KINDS if cells[task, method, kind]}
            if not means:
                continue
            spread = max(means.values()) - min(means.values())
            best = max(means, key=means.get)
            out.append(Claim(f"inits: {method} P={P} on {task}: the init changes exact match by ≥ 10 pp "
                             f"(best: {best})", f"spread {100 * spread:.1f} pp; " +
                             ", ".join(f"{k} {pct(cells[task, method, k])}" for k in KINDS if cells[task, method, k]),
                             "PEFT: 18.6 → 41.6 % by init", round(spread, 9) >= PEFT_SPREAD, how))
    return out


def markdown_table(records) -> str:
    cells = table(records)
    head = "| task | method | " + " | ".join(KINDS) + " |\n|---|---|" + "---|" * len(KINDS)
    rows = [f"| {task} | {method} | " + " | ".join(pct(cells[task, method, k]) for k in KINDS) + " |"
            for task in TASKS for method in INITS]
    return "\n".join([head, *rows])


def figure(records, path: Path) -> Path:
    """Exact match per init and method, one panel per task with runs: the seeds as dots, their mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = table(records)
    tasks = [t for t in TASKS if any(cells[t, m, k] for m in INITS for k in KINDS)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4), squeeze=False)
    width = 0.8 / len(INITS)
    for ax, task in zip(axes[0], tasks):
        for j, method in enumerate(INITS):
            xs = np.arange(len(KINDS)) + (j - (len(INITS) - 1) / 2) * width
            ys = [cells[task, method, k] for k in KINDS]
            ax.bar(xs, [100 * mean(y) if y else 0 for y in ys], width, label=method, alpha=0.6)
            for x, y in zip(xs, ys):
                ax.scatter([x] * len(y), [100 * v for v in y], color="k", s=8, zorder=3)
        ax.set(xticks=range(len(KINDS)), xticklabels=KINDS, ylabel="exact match (%)", ylim=(0, 100),
               title=f"{task}: init × method (P = {P}; dots: seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


@section("inits", configs=configs)
def run(repro) -> None:
    records = []
    for name, config in configs(repro.profile).items():
        records += [dict(r, sweep=name) for r in repro.sweep(name, config)]
    repro.report.add(claims(records, repro.profile))
    texts = ", ".join(f"{t}: {list(text(t))}" for t in TASKS)
    fig = figure(records, repro.report.figures / "inits.png")
    repro.report.section(TITLE, repro.timing.so_far(),
                         f"Exact match, mean over seeds [95 % t-interval], P = {P}; the text init's tokens: {texts}."
                         "\n\n" + markdown_table(records) + f"\n\n![inits]({fig.relative_to(repro.out)})\n\n" +
                         records_table(records))


@dataclasses.dataclass(frozen=True)
class ZeroShare:
    """The attention mass that zero-initialised slots take from the content at init, per method."""

    method: str
    share_mean: float
    share_max: float


def zero_init_attention_share(run_dir: Path, task: str, seed: int = 0, n: int = 64) -> list[ZeroShare]:
    """How much attention a zero init's slots take at init, on the base of a finished inits sweep: the mean and max,
    over heads, queries and n test inputs, of the first layer's attention on the P slots."""
    import jax.numpy as jnp
    from flax import nnx

    from prefixlab.analysis import attention_maps, load_run
    from prefixlab.methods import RunData, get_method

    base = load_run(run_dir).base_model(seed)
    state = nnx.state(base)
    tokens = T.parse_mixture(task).batch(jax.random.key(1), n, split="test").tokens_BT
    out = []
    for name in INITS:
        method = get_method(name, init_mode="zero")
        trainable = method.init(jax.random.key(0), base.cfg, state, P)
        model, ctx = method.build(method.graphdef(base.cfg), trainable, state, RunData(jnp.ones(P, bool)), base.cfg)
        probs = attention_maps(model, tokens, ctx)[0]  # (B, H, S, S)
        share = np.asarray(probs[:, :, P:, :P].sum(-1))
        out.append(ZeroShare(name, float(share.mean()), float(share.max())))
    return out
