#!/usr/bin/env python
"""Pretrain one base per seed, then tune every method on every task and evaluate.

Example (the paper's experiment 1: a model pretrained to sort ascending, tuned to sort descending):
  python scripts/sweep.py --pretrain sort_asc --tasks sort_asc,sort_desc --model paper-exp1 --seeds 3

Writes <out>/config.json, <out>/results.jsonl (one JSON object per seed x task x method x length x rank x lr,
appended as each group finishes) and <out>/results.csv, and prints a table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import jax  # noqa: E402

from prefixlab import tasks as T  # noqa: E402
from prefixlab.config import PRESETS, preset  # noqa: E402
from prefixlab.methods import LORA_MODULES, METHODS, SOFT_PROMPT_INITS, MethodError, get_method, match_lora_to_prefix  # noqa: E402
from prefixlab.results import append_jsonl, format_table, read_jsonl, write_csv  # noqa: E402
from prefixlab.train import OptimConfig, final_loss, pretrain  # noqa: E402
from prefixlab.tune import group_runs, tune_group  # noqa: E402
from prefixlab.model import count_params  # noqa: E402

ALL_METHODS = ["none", "prompt", "soft_prompt", "prefix", "prefix_kv", "lora", "full"]
LR_DEFAULTS = {m: get_method(m).default_lr for m in ALL_METHODS if m not in ("none", "prompt")}


class OneLineParser(argparse.ArgumentParser):
    """Bad input: one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    lr_doc = ", ".join(f"{m}={v:g}" for m, v in LR_DEFAULTS.items())
    p = OneLineParser(
        prog="sweep.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""methods:
  none         the pretrained base as it is
  prompt       P hard tokens; exhaustive search if V^P <= 10,000, else greedy coordinate search
  soft_prompt  P learned input embeddings (prompt tuning); init --soft-prompt-init
  prefix       reference prefix-tuning: P learned vectors replace the attention-block input at every layer
  prefix_kv    PEFT prefix-tuning: learned keys and values per layer (--prefix-projection: reparam. MLP)
  lora         rank-r LoRA (alpha/r scale, B = 0 at init) on --lora-targets of every layer
  full         every weight
default tuning learning rates: {lr_doc}
valid tasks: {T._valid_names()}; compose with '+', e.g. sort_asc+add1""",
    )
    p.add_argument("--pretrain", default="sort_asc",
                   help="pretraining task, or a comma list for a uniform mixture with no task indicator (default: %(default)s)")
    p.add_argument("--tasks", default="sort_asc,sort_desc", help="comma list of tasks to tune and evaluate on (default: %(default)s)")
    p.add_argument("--model", default="paper-exp1", choices=list(PRESETS), help="model preset (default: %(default)s)")
    p.add_argument("--variant", choices=list(T.VARIANTS), default=None,
                   help="task variant (default: classic unless a task exists only in extended)")
    p.add_argument("--pretrain-steps", type=int, default=6000, help="pretraining steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size, pretraining and tuning (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="pretraining learning rate, AdamW (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds 0..n-1; one base per seed (default: %(default)s)")
    p.add_argument("--methods", default=",".join(ALL_METHODS), help="comma list of methods (default: all)")
    p.add_argument("--prefix-lengths", default="1", help="context lengths P for prompt/soft_prompt/prefix/prefix_kv (default: %(default)s)")
    p.add_argument("--lora-ranks", default="1", help="comma list of LoRA ranks (default: %(default)s)")
    p.add_argument("--lora-targets", default="q,k,v,o,fc,proj",
                   help=f"LoRA target modules from {','.join(LORA_MODULES)} (default: %(default)s; the reference's "
                        "o,fc,proj cannot change a one-layer model's attention pattern)")
    p.add_argument("--lora-alpha", type=float, default=1.0, help="LoRA alpha; the update is scaled by alpha/rank (default: %(default)s)")
    p.add_argument("--match-params", action="store_true",
                   help="also run, for each prefix length, the LoRA rank on o,fc,proj with the prefix's parameter count")
    p.add_argument("--soft-prompt-init", choices=SOFT_PROMPT_INITS, default="sample_vocab", help="(default: %(default)s)")
    p.add_argument("--prefix-projection", action="store_true", help="prefix_kv through PEFT's reparameterisation MLP")
    p.add_argument("--tune-steps", type=int, default=2000, help="tuning steps per run (default: %(default)s)")
    p.add_argument("--tune-lr", default=None,
                   help="learning rates to sweep: a comma list for every method ('1e-3,5e-3') or method=lr entries "
                        "('prefix=5e-4,prefix=5e-3,lora=5e-3'); unnamed methods keep their defaults")
    p.add_argument("--eval-samples", type=int, default=3200, help="test-split samples per evaluation (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=250, help="steps per compiled chunk; the host syncs once per chunk (default: %(default)s)")
    p.add_argument("--out", default=None, help="run directory (default: runs/sweep-<date>-<time>)")
    p.add_argument("--force", action="store_true", help="write into an existing run directory, replacing its results")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _ints(parser, flag, text, minimum):
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        parser.error(f"{flag} needs a comma list of integers, got {text!r}")
    if any(v < minimum for v in vals):
        parser.error(f"{flag} values must be >= {minimum}, got {text!r}")
    return vals


def _tune_lrs(parser, text, methods):
    lrs = {m: [LR_DEFAULTS[m]] for m in methods if m in LR_DEFAULTS}
    if text is None:
        return lrs
    named = {}
    try:
        for item in text.split(","):
            if "=" in item:
                m, v = item.split("=", 1)
                if m not in LR_DEFAULTS:
                    parser.error(f"--tune-lr names {m!r}, which has no learning rate; valid: {', '.join(LR_DEFAULTS)}")
                named.setdefault(m, []).append(float(v))
            else:
                named.setdefault(None, []).append(float(item))
    except ValueError:
        parser.error(f"--tune-lr needs numbers, got {text!r}")
    if any(v <= 0 for vs in named.values() for v in vs):
        parser.error(f"--tune-lr values must be positive, got {text!r}")
    for m in lrs:
        lrs[m] = named.get(m, named.get(None, lrs[m]))
    return lrs


def parse_args(argv=None):
    """Parses and validates everything before any compute starts."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        pre_specs, task_specs = T.split_specs(a.pretrain), T.split_specs(a.tasks)
        variant = T.choose_variant(pre_specs + task_specs, a.variant)
        a.pretrain_mix = T.parse_mixture(a.pretrain, variant)
        a.task_mixes = [T.parse_mixture(t, variant) for t in task_specs]
    except T.TaskError as e:
        parser.error(str(e))
    a.variant = variant.name
    a.methods = [m.strip() for m in a.methods.split(",")]
    bad = [m for m in a.methods if m not in METHODS]
    if bad or not a.methods:
        parser.error(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")
    for flag in ("pretrain_steps", "tune_steps", "seeds", "batch_size", "eval_samples", "chunk"):
        if getattr(a, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(a, flag)}")
    if a.lr <= 0:
        parser.error(f"--lr must be positive, got {a.lr}")
    a.prefix_lengths = _ints(parser, "--prefix-lengths", a.prefix_lengths, 1)
    a.lora_ranks = _ints(parser, "--lora-ranks", a.lora_ranks, 1)
    a.lora_targets = tuple(t.strip() for t in a.lora_targets.split(","))
    a.tune_lrs = _tune_lrs(parser, a.tune_lr, a.methods)
    a.cfg = preset(a.model, vocab_size=variant.vocab_size)
    try:
        a.method_groups = method_groups(a)
    except MethodError as e:
        parser.error(str(e))
    if "prompt" in a.methods and max(a.prefix_lengths) > 8:
        parser.error("--prefix-lengths above 8 make the hard-prompt search too long; drop 'prompt' or shorten")
    a.out = Path(a.out or f"runs/sweep-{datetime.now():%Y%m%d-%H%M%S}")
    if (a.out / "results.jsonl").exists() and not a.force:
        parser.error(f"{a.out} already holds results; choose another --out or pass --force to replace them")
    return a


def method_groups(a):
    """[(Method, lora_rank or None)]: one compiled group each (LoRA ranks differ in shape)."""
    groups = []
    for m in a.methods:
        if m == "lora":
            groups += [(get_method("lora", rank=r, alpha=a.lora_alpha, targets=a.lora_targets), r) for r in a.lora_ranks]
        elif m == "soft_prompt":
            groups.append((get_method(m, init_mode=a.soft_prompt_init), None))
        elif m == "prefix_kv":
            groups.append((get_method(m, projection=a.prefix_projection), None))
        else:
            groups.append((get_method(m), None))
    if a.match_params:
        for p in a.prefix_lengths:
            lora, n_lora, n_prefix = match_lora_to_prefix(a.cfg, p)
            lora = dataclasses.replace(lora, alpha=a.lora_alpha)
            print(f"match-params: prefix P={p} has {n_prefix:,} parameters; LoRA rank {lora.rank} on o,fc,proj has {n_lora:,}")
            groups.append((lora, lora.rank))
    return groups


def main(argv=None) -> int:
    a = parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    results_path = a.out / "results.jsonl"
    if results_path.exists():
        results_path.unlink()  # --force
    seeds = list(range(a.seeds))
    config = {k: v for k, v in vars(a).items() if k not in ("cfg", "pretrain_mix", "task_mixes", "method_groups", "out")}
    config.update(out=str(a.out), model_config=dataclasses.asdict(a.cfg), jax_version=jax.__version__,
                  devices=[str(d) for d in jax.devices()])
    (a.out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    print(f"prefixlab sweep -> {a.out}  model {a.model} ({a.variant} tasks, vocabulary {a.cfg.vocab_size}), "
          f"seeds {seeds}, device {jax.devices()[0].platform}")

    t0 = time.perf_counter()
    _, base_S, losses_ST, pre_wall = pretrain(a.cfg, a.pretrain_mix, seeds, a.pretrain_steps, a.batch_size,
                                              OptimConfig(lr=a.lr), a.chunk, progress=not a.quiet)
    pre_loss_S = final_loss(losses_ST)
    n_model = count_params(jax.tree.map(lambda x: x[0], base_S))
    print(f"pretrained {len(seeds)} base(s) on {a.pretrain_mix.spec}: {a.pretrain_steps} steps in {pre_wall:.1f} s, "
          f"final loss {pre_loss_S.mean():.4f}")

    common = dict(pretrain=a.pretrain_mix.spec, model=a.model, variant=a.variant, pretrain_steps=a.pretrain_steps,
                  status="ok")
    records = []
    for task in a.task_mixes:
        for method, rank in a.method_groups:
            lrs = a.tune_lrs.get(method.name, [0.0])
            runs = group_runs(method, a.prefix_lengths, lrs)
            recs, _, _ = tune_group(method, a.cfg, base_S, task, runs, seeds, a.tune_steps, a.batch_size,
                                    eval_samples=a.eval_samples, chunk=a.chunk, progress=not a.quiet)
            for r in recs:
                r.update(common, task=task.spec, method=method.name, lora_rank=rank,
                         lora_targets=",".join(method.targets) if rank else None,
                         steps=a.tune_steps if method.name != "none" else a.pretrain_steps)
                if method.name == "none":  # the pretrained base: its pretraining loss, size and time
                    r.update(final_loss=float(pre_loss_S[r["seed"]]), trainable_params=n_model,
                             wall_s=pre_wall / len(seeds), lr=a.lr)
                append_jsonl(results_path, r)
            records += recs
            em = [r["exact_match"] for r in recs]
            label = method.name + (f" r={rank}" if rank else "")
            print(f"  {task.spec:<14} {label:<14} exact match {100 * sum(em) / len(em):5.1f} % "
                  f"(mean of {len(em)} runs)  {time.perf_counter() - t0:6.0f} s elapsed", flush=True)

    write_csv(a.out / "results.csv", read_jsonl(results_path))
    print()
    print(format_table(records))
    print(f"\n{len(records)} results in {results_path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
