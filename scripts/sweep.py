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
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import jax  # noqa: E402

from prefixlab import tasks as T  # noqa: E402
from prefixlab.config import PRESETS, preset  # noqa: E402
from prefixlab.methods import LORA_MODULES, METHODS, PREFIX_INITS, SOFT_PROMPT_INITS, MethodError, get_method, match_lora_to_prefix  # noqa: E402
from prefixlab.results import append_jsonl, format_table, loss_curve, read_jsonl, read_jsonl_repairing  # noqa: E402
from prefixlab import checkpoint as ckpt  # noqa: E402
from prefixlab.bases import DEFAULT_CACHE, default_cache_dir, load_or_pretrain  # noqa: E402
from prefixlab.methods import MAX_CONTEXT_LEN  # noqa: E402
from prefixlab.report import write_report  # noqa: E402
from prefixlab.train import OptimConfig, final_loss  # noqa: E402
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
  prefix       reference prefix-tuning: P learned vectors replace the attention-block input at every layer;
               init --prefix-init
  prefix_kv    PEFT prefix-tuning: learned keys and values per layer (--prefix-projection: reparam. MLP)
  lora         rank-r LoRA (alpha/r scale, B = 0 at init) on --lora-targets of every layer
  full         every weight
default tuning learning rates: {lr_doc}
valid tasks: {T._valid_names()}; compose with '+', e.g. sort_asc+add1""",
    )
    p.add_argument("--pretrain", default="sort_asc",
                   help="pretraining task, or a comma list for a uniform mixture with no task indicator (default: %(default)s)")
    p.add_argument("--tasks", default="sort_asc,sort_desc", help="comma list of tasks to tune and evaluate on (default: %(default)s)")
    p.add_argument("--tune-tasks", default=None,
                   help="tune only on these tasks, a subset of --tasks; the base and the cross evaluation still cover "
                        "every --tasks task (default: all of --tasks)")
    p.add_argument("--model", default="paper-exp1", choices=list(PRESETS), help="model preset (default: %(default)s)")
    p.add_argument("--variant", choices=list(T.VARIANTS), default=None,
                   help="task variant (default: classic unless a task exists only in extended)")
    p.add_argument("--pretrain-steps", type=int, default=10000, help="pretraining steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size, pretraining and tuning (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="pretraining learning rate, AdamW (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=2,
                   help="number of seeds 0..n-1; one base per seed (default: %(default)s, so that the default sweep "
                        "fits in 10 min on 2 CPU cores; the papers' claims are tested with 3, scripts/reproduce.py)")
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
    p.add_argument("--prefix-init", default="normal",
                   help=f"prefix init(s), a comma list from {','.join(PREFIX_INITS)}: normal = N(0, 1) (the reference); "
                        "sample_vocab = the base's own activations for sampled tokens at the slots, i.e. the prefix "
                        "starts as the sample_vocab soft prompt (default: %(default)s)")
    p.add_argument("--prefix-projection", action="store_true", help="prefix_kv through PEFT's reparameterisation MLP")
    p.add_argument("--tune-steps", type=int, default=1500,
                   help="tuning steps per run (default: %(default)s; on paper-exp1 the losses level off by then)")
    p.add_argument("--tune-lr", default=None,
                   help="learning rates to sweep: a comma list for every method ('1e-3,5e-3') or method=lr entries "
                        "('prefix=5e-4,prefix=5e-3,lora=5e-3'); unnamed methods keep their defaults")
    p.add_argument("--eval-samples", type=int, default=3200, help="test-split samples per evaluation (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=250, help="steps per compiled chunk; the host syncs once per chunk (default: %(default)s)")
    p.add_argument("--out", default=None, help="run directory (default: runs/sweep-<date>-<time>)")
    p.add_argument("--force", action="store_true",
                   help="write into an existing run directory, deleting its results and checkpoints first")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in --out with its own config.json: finished groups are kept, "
                        "an unfinished one continues from its last saved chunk")
    p.add_argument("--cache-dir", default=None,
                   help="where pretrained bases are cached and reused by any sweep with the same pretraining "
                        f"configuration (default: $PREFIXLAB_CACHE or {DEFAULT_CACHE})")
    p.add_argument("--save-every", type=float, default=60.0,
                   help="seconds between saves of the training state, for --resume (default: %(default)s)")
    p.add_argument("--no-cross-eval", action="store_true",
                   help="evaluate each tuned run on its own task only (default: also on every other --tasks task)")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host TPU/GPU job: call jax.distributed.initialize() first; only process 0 writes")
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


OPERATIONAL = ("out", "force", "resume", "quiet", "cache_dir", "save_every", "distributed")  # not part of "what"


def _resume_args(parser, a, argv):
    """--resume runs the sweep of <out>/config.json: the flags given must be none but operational ones, or the same."""
    if a.force:
        parser.error("--resume and --force exclude each other")
    if a.out is None:
        parser.error("--resume needs --out <run directory>")
    path = Path(a.out) / "config.json"
    try:
        stored = parser.parse_args(json.loads(path.read_text())["argv"])
    except (OSError, ValueError, KeyError) as e:
        parser.error(f"cannot resume {a.out}: {path} is missing or unreadable ({type(e).__name__})")
    defaults = parser.parse_args([])
    what = [k for k in vars(defaults) if k not in OPERATIONAL]
    if any(getattr(a, k) != getattr(defaults, k) for k in what):
        diff = [k for k in what if getattr(a, k) != getattr(stored, k)]
        if diff:
            flags = ", ".join("--" + k.replace("_", "-") for k in diff)
            parser.error(f"cannot resume {a.out}: {flags} differ from its config.json; give only --out and --resume")
    for k in what:
        setattr(a, k, getattr(stored, k))
    a.argv = json.loads(path.read_text())["argv"]
    return a


def parse_args(argv=None):
    """Parses and validates everything before any compute starts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(argv)
    a.argv = argv
    if a.resume:
        a = _resume_args(parser, a, argv)
    try:
        pre_specs, task_specs = T.split_specs(a.pretrain), T.split_specs(a.tasks)
        variant = T.choose_variant(pre_specs + task_specs, a.variant)
        a.pretrain_mix = T.parse_mixture(a.pretrain, variant)
        a.task_mixes = [T.parse_mixture(t, variant) for t in task_specs]
    except T.TaskError as e:
        parser.error(str(e))
    a.variant = variant.name
    a.tune_task_specs = [m.spec for m in a.task_mixes]  # a list: it goes into config.json
    if a.tune_tasks is not None:
        try:
            a.tune_task_specs = [T.parse_mixture(t, variant).spec for t in T.split_specs(a.tune_tasks)]
        except T.TaskError as e:
            parser.error(f"--tune-tasks: {e}")
        bad = [t for t in a.tune_task_specs if t not in {m.spec for m in a.task_mixes}]
        if bad:
            parser.error(f"--tune-tasks must be tasks of --tasks; {', '.join(bad)} not in {a.tasks}")
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
    a.prefix_inits = [t.strip() for t in a.prefix_init.split(",")]
    # --match-params adds LoRA groups, which need LoRA's learning rate even when lora is not in --methods
    a.tune_lrs = _tune_lrs(parser, a.tune_lr, a.methods + (["lora"] if a.match_params else []))
    a.cfg = preset(a.model, vocab_size=variant.vocab_size)
    try:
        a.method_groups = method_groups(a)
    except MethodError as e:
        parser.error(str(e))
    if max(a.prefix_lengths) > MAX_CONTEXT_LEN:
        parser.error(f"--prefix-lengths up to {MAX_CONTEXT_LEN} (the longest context the model takes), got {max(a.prefix_lengths)}")
    if a.save_every < 0:
        parser.error(f"--save-every must be >= 0, got {a.save_every}")
    if "prompt" in a.methods and max(a.prefix_lengths) > 8:
        parser.error("--prefix-lengths above 8 make the hard-prompt search too long; drop 'prompt' or shorten")
    a.out = Path(a.out or f"runs/sweep-{datetime.now():%Y%m%d-%H%M%S}")
    if a.out.exists() and any(a.out.iterdir()) and not (a.force or a.resume):
        parser.error(f"{a.out} already exists; pass --resume to continue it, --force to replace it, or another --out")
    a.cache_dir = Path(a.cache_dir) if a.cache_dir else default_cache_dir()
    return a


def method_groups(a):
    """[(Method, lora_rank or None)]: one compiled group each (LoRA ranks differ in shape)."""
    groups = []
    for m in a.methods:
        if m == "lora":
            groups += [(get_method("lora", rank=r, alpha=a.lora_alpha, targets=a.lora_targets), r) for r in a.lora_ranks]
        elif m == "soft_prompt":
            groups.append((get_method(m, init_mode=a.soft_prompt_init), None))
        elif m == "prefix":
            groups += [(get_method(m, init_mode=i), None) for i in a.prefix_inits]
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


def group_tag(method, rank) -> str:
    """A group's name in results and under <out>/ckpt/<task>/: method and the settings that change its shape."""
    tag = method.name
    if rank:
        tag += f"-r{rank}-" + "".join(method.targets)
    if method.name == "soft_prompt" or (method.name == "prefix" and method.init_mode != "normal"):
        tag += f"-{method.init_mode}"
    if method.name == "prefix_kv" and method.projection:
        tag += "-projection"
    return tag


def _fresh_out(a) -> None:
    """--force: remove what an earlier sweep wrote here (only these names)."""
    for name in ("config.json", "results.jsonl", "results.csv", "summary.md", "plots", "ckpt"):
        path = a.out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _write_config(a) -> None:
    skip = ("cfg", "pretrain_mix", "task_mixes", "method_groups", "out", "cache_dir")
    config = {k: v for k, v in vars(a).items() if k not in skip}
    config.update(out=str(a.out), cache_dir=str(a.cache_dir), model_config=dataclasses.asdict(a.cfg),
                  jax_version=jax.__version__, devices=[str(d) for d in jax.devices()])
    ckpt.write_json_atomic(a.out / "config.json", config)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.distributed:
        jax.distributed.initialize()
    writer = jax.process_index() == 0  # multi-host: every process computes, process 0 writes
    log = print if writer else (lambda *_, **__: None)
    results_path = a.out / "results.jsonl"
    done_groups = set()
    if writer:
        a.out.mkdir(parents=True, exist_ok=True)
        if a.force:
            _fresh_out(a)
        if a.resume and results_path.exists():
            done_groups = {r["group"] for r in read_jsonl_repairing(results_path, log)}
        _write_config(a)
    seeds = list(range(a.seeds))
    progress = writer and not a.quiet
    log(f"prefixlab sweep -> {a.out}  model {a.model} ({a.variant} tasks, vocabulary {a.cfg.vocab_size}), "
        f"seeds {seeds}, {jax.device_count()} {jax.devices()[0].platform} device(s)"
        + (f", resuming: {len(done_groups)} group(s) already done" if a.resume else ""))

    t0 = time.perf_counter()
    try:
        _, base_S, losses_ST, wall_S, cached = load_or_pretrain(
            a.cache_dir, a.cfg, a.pretrain_mix, seeds, a.pretrain_steps, a.batch_size, OptimConfig(lr=a.lr),
            a.chunk, progress, a.save_every, log, copy_to=a.out / "ckpt" / "base" if writer else None)
    except ckpt.CheckpointError as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    pre_loss_S = final_loss(losses_ST)
    n_model = count_params(jax.tree.map(lambda x: x[0], base_S))
    log(f"bases on {a.pretrain_mix.spec}: {a.pretrain_steps} steps, final loss {pre_loss_S.mean():.4f}, "
        f"pretraining {wall_S.sum():.1f} s" + (f" (earlier, seeds {cached} from the cache)" if cached else ""))

    common = dict(pretrain=a.pretrain_mix.spec, model=a.model, variant=a.variant, pretrain_steps=a.pretrain_steps)
    for task in a.task_mixes:
        cross = [] if a.no_cross_eval else [t for t in a.task_mixes if t.spec != task.spec]
        for method, rank in a.method_groups:
            if method.name != "none" and task.spec not in a.tune_task_specs:
                continue
            group = f"{task.spec}/{group_tag(method, rank)}"
            if group in done_groups:
                log(f"  {group:<36} done earlier, kept")
                continue
            group_dir = a.out / "ckpt" / task.spec / group_tag(method, rank)
            partial = ckpt.ChunkCheckpoint(group_dir.with_name(group_dir.name + ".partial"), a.save_every)
            runs = group_runs(method, a.prefix_lengths, a.tune_lrs[method.name] if method.name in LR_DEFAULTS else [0.0])
            recs, trainable_SR, losses_SRT = tune_group(
                method, a.cfg, base_S, task, runs, seeds, a.tune_steps, a.batch_size, eval_samples=a.eval_samples,
                chunk=a.chunk, progress=progress, cross_tasks=cross, resume=partial if writer else None)
            for r in recs:
                r.update(common, group=group, task=task.spec, method=method.name, lora_rank=rank,
                         init=getattr(method, "init_mode", None),
                         lora_targets=",".join(method.targets) if rank else None,
                         steps=a.tune_steps if method.name != "none" else a.pretrain_steps)
                if method.name == "none":  # the pretrained base: its pretraining loss, size and time
                    r.update(final_loss=float(pre_loss_S[r["seed"]]), trainable_params=n_model,
                             wall_s=float(wall_S[r["seed"]]), lr=a.lr, loss_curve=loss_curve(losses_ST[r["seed"]]))
            if writer:
                if jax.tree.leaves(trainable_SR):
                    ckpt.save(group_dir, {"trainable": trainable_SR, "losses": losses_SRT},
                              {"kind": "tuned contexts", "group": group, "seeds": seeds,
                               "runs": [dataclasses.asdict(r) for r in runs], "model_config": dataclasses.asdict(a.cfg)})
                append_jsonl(results_path, recs)  # the group's lines in one write
                partial.clear()
            em = [r["exact_match"] for r in recs if r["exact_match"] is not None]
            diverged = sum(r["status"] == "diverged" for r in recs)
            log(f"  {group:<36} exact match {100 * sum(em) / max(len(em), 1):5.1f} % (mean of {len(em)} runs"
                + (f", {diverged} diverged" if diverged else "") + f")  {time.perf_counter() - t0:6.0f} s elapsed",
                flush=True)

    if writer:
        records = read_jsonl(results_path)
        write_report(a.out, records)
        log()
        log(format_table(records))
        log(f"\n{len(records)} results in {results_path}; summary.md, results.csv and plots/ beside it "
            f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
