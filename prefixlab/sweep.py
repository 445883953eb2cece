"""Sweeps as a library: pretrain one base per seed, tune every method on every task, evaluate, write the run.

    from prefixlab.sweep import SweepConfig, run_sweep
    records = run_sweep(SweepConfig(model="tiny", pretrain="add1", tasks=("add1",)), "runs/demo")

A run directory holds config.json (the SweepConfig, resolved), results.jsonl (one record per seed x task x method
x length x rank x lr, appended group by group), results.csv, summary.md, plots/ and ckpt/ (the bases and each
group's tuned parameters, with the method's settings). `run_sweep(..., resume=True)` continues an interrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab import checkpoint as ckpt
from prefixlab import record
from prefixlab.bases import BaseSpec, base_dir, is_finite, load_or_pretrain
from prefixlab.methods import MATCH_TOLERANCE, method_settings
from prefixlab.model import count_params
from prefixlab.processes import agree, is_multi, is_writer
from prefixlab.sweep_report import write_report
from prefixlab.results import append_jsonl, format_table, loss_curve, read_jsonl
from prefixlab.selection import mark_selected, selected
from prefixlab.run_dir import (Manifest, done_groups, group_dir, lock, open_run_dir, remove_sweep_files, start_dirs,
                               stored_config_hash, write_config)
from prefixlab.safe_paths import inside, real_dir, unmake
from prefixlab.sweep_config import SweepConfig, SweepError, group_name, load_config
from prefixlab.train import OptimConfig, final_loss
from prefixlab.tune import TuneSpec, group_runs, tune_group

__all__ = ["SweepConfig", "SweepError", "run_sweep", "load_config"]

def run_sweep(config: SweepConfig | None, run_dir, *, resume: bool = False, force: bool = False,
              progress: bool = True, save_every: float = 60.0, log=print) -> list[dict]:
    """Runs (or, with resume=True, continues) the sweep `config` into `run_dir` and returns its records.

    resume: continue `run_dir` from its config.json (finished groups are kept, an unfinished one continues from
    its last saved chunk); a `config` given with it must equal the stored one. force: delete an earlier sweep's
    files in `run_dir` first. save_every: seconds between saves of the training state. Multi-host: every process
    computes, process 0 writes. Raises SweepError (bad request or damaged run directory, before anything changes;
    a refused start leaves no folder behind), checkpoint.CheckpointError (unreadable state) or OSError (a full or
    read-only disk while running: what finished is kept, and resume continues exactly)."""
    _check_arguments(config, run_dir, resume, force, progress, save_every, log)
    run_dir = Path(run_dir)
    if not is_writer():
        return _follow(config, run_dir, resume, save_every)
    created = []
    try:
        with contextlib.ExitStack() as held:
            try:
                config = open_run_dir(config, run_dir, resume, force)
                _check_memory(config)
                cache = Path(config.cache_dir)
                created = start_dirs({"cache_dir": cache, "out": run_dir})
                entry = base_dir(cache, base_spec(config).key())
                if entry.exists() or entry.is_symlink():  # one entry of a writable cache may not be writable
                    inside(cache, f"{entry.name}/train.lock", "base cache")
                    start_dirs({"cache_dir": entry})
                held.enter_context(lock(run_dir))
                if force:
                    remove_sweep_files(run_dir)
                done = done_groups(run_dir, log) if resume else set()
                manifest = Manifest(run_dir)
                manifest.save()
                if not resume:  # a resumed run keeps its config.json as written (its groups' hashes are of it)
                    write_config(config, run_dir)
            except BaseException:
                agree([False])  # the other processes stop too
                raise
            agree([True])
            agree([group_name(*g) in done for g in config.groups()])
            return _sweep(config, run_dir, manifest, done, resume, progress, save_every, log)
    except BaseException:
        unmake(created)  # folders this call made that are still empty
        raise


def _check_arguments(config, run_dir, resume, force, progress, save_every, log) -> None:
    """The Python API's arguments by type, before anything runs (a SweepError naming the argument)."""
    checks = [("config", config is None or isinstance(config, SweepConfig), "a SweepConfig or None"),
              ("run_dir", isinstance(run_dir, (str, os.PathLike)) and str(run_dir) != "", "a path"),
              *((name, isinstance(v, bool), "True or False")
                for name, v in (("resume", resume), ("force", force), ("progress", progress))),
              ("save_every", isinstance(save_every, (int, float)) and not isinstance(save_every, bool)
               and math.isfinite(save_every) and save_every >= 0, "a finite number >= 0"),
              ("log", callable(log), "callable")]
    for name, ok, expected in checks:
        if not ok:
            value = {"config": config, "run_dir": run_dir, "resume": resume, "force": force, "progress": progress,
                     "save_every": save_every, "log": log}[name]
            raise SweepError(f"run_sweep: {name} must be {expected}, got {value!r}", name)


def machine_memory() -> int | None:
    """Bytes a group's program can hold here: the host's memory on a CPU, the first device's limit on an
    accelerator (None where the runtime does not say)."""
    if jax.default_backend() == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def _check_memory(config: SweepConfig) -> None:
    limit = machine_memory()
    if limit:
        config.check_fits(limit, f"this machine's {limit / 2**30:,.1f} GiB")


def _base_settings(config: SweepConfig) -> dict:
    """What decides the bases (the cache key), as bases.BaseSpec's fields."""
    return dict(cfg=config.model_config, mixture=config.pretrain_mix, steps=config.pretrain_steps,
                batch_size=config.batch_size, optim=OptimConfig(lr=config.lr), stop_rule=config.pretrain_stop_rule,
                val_samples=config.val_samples)


def base_spec(config: SweepConfig) -> BaseSpec:
    return BaseSpec(**_base_settings(config))


def _follow(config, run_dir, resume, save_every):
    """A process other than 0: the same programs, in step with process 0, writing nothing."""
    if not agree([False])[0]:
        raise SweepError(f"process 0 refused the sweep into {run_dir} (its message says why)", "out")
    config = load_config(run_dir) if resume else config.resolved()
    done = {group_name(*g) for g, d in zip(config.groups(), agree([False] * len(config.groups()))) if d}
    return _sweep(config, run_dir, None, done, resume, False, save_every, lambda *_, **__: None)


def _sweep(config, run_dir, manifest, done_groups, resume, progress, save_every, log):
    """The sweep itself; manifest is None on processes other than the writer."""
    writer = manifest is not None
    results_path = run_dir / "results.jsonl"
    progress = progress and writer
    seeds = list(range(config.seeds))
    cfg = config.model_config
    log(f"prefixlab sweep -> {run_dir}  model {config.model} ({config.task_variant.name} tasks, vocabulary "
        f"{cfg.vocab_size}: {config.variant_reason}), seeds {seeds}, {jax.device_count()} {jax.devices()[0].platform} device(s)"
        + (f", resuming: {len(done_groups)} group(s) already done" if resume else ""))
    for lora, m in config.matched_loras().items():
        ratio = m["param_ratio"]
        log(f"match-params: prefix P={m['matched_prefix_len']} has {m['matched_prefix_params']:,} parameters; LoRA rank "
            f"{lora.rank} on {','.join(lora.targets)} has {lora.n_params(cfg, None):,} (ratio {ratio:.2f}"
            + ("" if abs(ratio - 1) <= MATCH_TOLERANCE else f", outside ±{MATCH_TOLERANCE:.0%}: marked in the tables") + ")")

    t0 = time.perf_counter()
    _, base_E, losses_EU, wall_E, cached, pre_used_E = load_or_pretrain(
        Path(config.cache_dir), base_spec(config), config.base_seeds, chunk=config.chunk, progress=progress,
        save_every_s=save_every, log=log, copy_to=real_dir(inside(run_dir, "ckpt/base")) if writer else None)
    if config.shared_base:  # one base, the same for every seed's runs; its pretraining time counted once
        log(f"one base (seed 0) shared by seeds {seeds}")
        wall_E = np.concatenate([wall_E, np.zeros(len(seeds) - 1)])
        base_E, losses_EU, pre_used_E = jax.tree.map(lambda x: np.repeat(np.asarray(x), len(seeds), axis=0)
                                                     if isinstance(x, np.ndarray) else
                                                     jnp.repeat(x, len(seeds), axis=0),
                                                     (base_E, losses_EU, np.asarray(pre_used_E)))
    pre_loss_E = np.array([final_loss(losses_EU[e, :pre_used_E[e]]) for e in range(len(seeds))])
    diverged_E = np.array([not is_finite(jax.tree.map(lambda x: x[e], base_E), losses_EU[e, :pre_used_E[e]])
                           for e in range(len(seeds))])
    n_model = count_params(jax.tree.map(lambda x: x[0], base_E))
    steps_text = (f"{config.pretrain_steps} steps" if (pre_used_E == config.pretrain_steps).all() else
                  f"{', '.join(map(str, pre_used_E))} of {config.pretrain_steps} steps (stopped at convergence)")
    log(f"bases on {config.pretrain_mix.spec}: {steps_text}, final loss {pre_loss_E.mean():.4f}, "
        f"pretraining {wall_E.sum():.1f} s" + (f" (earlier, seeds {cached} from the cache)" if cached else "")
        + (f"; seeds {np.flatnonzero(diverged_E).tolist()} diverged: every row on them is marked diverged"
           if diverged_E.any() else ""))
    base = dict(pre_loss_E=pre_loss_E, losses_EU=losses_EU, wall_E=wall_E, n_model=n_model, used_E=pre_used_E,
                diverged_E=diverged_E, lr=config.lr)

    new_records = []
    groups = config.groups()
    if config.grid_shard is not None:
        log(f"grid shard {config.grid_shard[0]}/{config.grid_shard[1]}: {len(groups)} of the sweep's "
            f"{len(config.groups(sharded=False))} groups (merge the shards with scripts/merge.py)")
    to_run = sum(group_name(*g) not in done_groups for g in groups)
    t_groups, ran = time.perf_counter(), 0
    for k, (task, method) in enumerate(groups, 1):
        cross = [t for t in config.task_mixes if t.spec != task.spec] if config.cross_eval else []
        group = group_name(task, method)
        label = f"[{k}/{len(groups)}] "
        if group in done_groups:
            log(f"{label}{group:<36} done earlier, kept")
            continue
        recs = _run_group(config, run_dir, manifest, method, task, cross, base_E, base, seeds, progress,
                          save_every, label)
        new_records += recs
        ran += 1
        em = [r["exact_match"] for r in selected(recs) if r["exact_match"] is not None]
        diverged = sum(r["status"] == "diverged" for r in recs)
        log(f"{label}{group:<36} exact match {100 * sum(em) / max(len(em), 1):5.1f} % (mean of {len(em)} "
            f"selected of {len(recs)} runs" + (f", {diverged} diverged" if diverged else "") + _stops(recs)
            + f")  {time.perf_counter() - t0:6.0f} s elapsed"
            + _eta(time.perf_counter() - t_groups, ran, to_run), flush=True)

    if not writer:
        return new_records
    records = read_jsonl(results_path)
    write_report(run_dir, records)
    log()
    log(format_table(records))
    log(f"\n{len(records)} results in {results_path}; summary.md, results.csv and plots/ beside it "
        f"({time.perf_counter() - t0:.0f} s)")
    return records


def _stops(recs) -> str:
    """', steps used 400-1500 (solved 3, plateau 1, budget 2)' for runs that stopped by the rule."""
    reasons = Counter(r.get("stop_reason") for r in recs if r.get("stop_reason") not in (None, "untrained"))
    if not reasons or set(reasons) == {"budget"}:
        return ""
    used = [r["steps_used"] for r in recs if r.get("stop_reason") in reasons]
    return (f", steps used {min(used)}-{max(used)} ("
            + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) + ")")


def _eta(seconds: float, ran: int, to_run: int) -> str:
    """The rest of the sweep at the mean time of its groups so far (groups differ: a rough guide)."""
    left = seconds / ran * (to_run - ran)
    return f", about {left / 60:.1f} min to go" if ran < to_run else ""


def _pretraining(base: dict, seed: int) -> dict:
    """The base's record fields for seed `seed`: its pretraining loss, size, time, rate, steps and loss curve."""
    pre_loss = float(base["pre_loss_E"][seed])
    return dict(final_loss=pre_loss if math.isfinite(pre_loss) else None, trainable_params=base["n_model"],
                wall_s=float(base["wall_E"][seed]), lr=base["lr"], steps_used=int(base["used_E"][seed]),
                loss_curve=loss_curve(base["losses_EU"][seed, :base["used_E"][seed]]))


def _run_group(config, run_dir, manifest, method, task, cross, base_E, base, seeds, progress, save_every, label=""):
    """Tunes and evaluates one group; the writer saves its parameters, then appends its records in one write."""
    writer = manifest is not None
    group = group_name(task, method)
    directory = group_dir(run_dir, group)
    if writer:
        manifest.wrote(f"ckpt/{group}")
    partial = ckpt.ChunkCheckpoint(directory.with_name(directory.name + ".partial"), save_every)
    runs = group_runs(method, config.prefix_lengths, config.learning_rates(method.name))
    spec = TuneSpec(method, config.model_config, task, config.tune_steps, config.batch_size, config.tune_optim,
                    config.chunk, config.stop_rule, config.val_samples, config.eval_samples, tuple(cross))
    measured, trainable_ER, losses_ERU = tune_group(
        spec, base_E, runs, seeds, progress=progress, label=label,
        resume=partial if writer and not is_multi() else None)  # several processes resume by groups
    untuned = method.training == "none"  # the pretrained base: its records report its pretraining
    recs = []
    for m in measured:
        seed = m["seed"]
        r = record.build(m, task=task.spec, group=group, method=method, pretrain=config.pretrain_mix.spec,
                         pretrain_steps=config.pretrain_steps, model=config.model, variant=config.task_variant.name,
                         steps=config.pretrain_steps if untuned else config.tune_steps,
                         matched=config.matched_loras().get(method), base=_pretraining(base, seed) if untuned else None)
        recs.append(record.diverged(r) if base["diverged_E"][seed] else r)  # nothing measured on it means anything
    mark_selected(recs)
    if writer:
        has_checkpoint = bool(jax.tree.leaves(trainable_ER))
        if has_checkpoint:
            ckpt.save(directory, {"trainable": trainable_ER, "losses": losses_ERU},
                      {"kind": "tuned contexts", "group": group, "seeds": seeds, "method": method_settings(method),
                       "runs": [dataclasses.asdict(r) for r in runs],
                       "selected": [[r["selected"] for r in recs if r["seed"] == s] for s in seeds],
                       "model_config": dataclasses.asdict(config.model_config)})
        append_jsonl(run_dir / "results.jsonl", recs)
        manifest.group_done(group, len(recs), has_checkpoint, stored_config_hash(run_dir))
        partial.clear()
    return recs
