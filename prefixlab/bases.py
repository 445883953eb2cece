"""A cache of pretrained bases, shared by every sweep: a base is pretrained once per (configuration, seed).

The cache key is the content of everything that determines the parameters: model configuration, pretraining
mixture and variant, steps, batch size, optimizer settings, the stopping rule when pretraining stops at convergence,
and the code's `NUMERICS` version (not the chunk size, which changes nothing).
    <cache>/base-<hash>/seed-<s>/        one Orbax checkpoint per seed: params and the per-step losses
    <cache>/base-<hash>/seed-<s>.partial  pretraining state while in progress (resumed after a kill)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from prefixlab import checkpoint as ckpt
from prefixlab import schema as S
from prefixlab.config import ModelConfig
from prefixlab.evaluate import DEFAULT_VAL_SAMPLES, base_builder, make_validator
from prefixlab.locks import PidLock
from prefixlab.model import abstract_model
from prefixlab.processes import agree, is_multi, is_writer, to_host
from prefixlab.safe_paths import inside, remove
from prefixlab.stopping import STOP_REASONS, EarlyStopping
from prefixlab.tasks import Mixture
from prefixlab.train import OptimConfig, pretrain

DEFAULT_CACHE = "runs/base-cache"
# Part of the cache key: bump when a code change alters what pretraining produces, so an old cache never serves a
# base the current code would not train (the history: docs/performance.md).
NUMERICS = 6


def default_cache_dir() -> Path:
    return Path(os.environ.get("PREFIXLAB_CACHE", DEFAULT_CACHE))


@dataclasses.dataclass(frozen=True)
class BaseSpec:
    """What decides a pretrained base (with its seed): the cache keys an entry by it (`pretrain_config`).
    stop_rule: a `stopping.StopRule`: each seed pretrains until it converges on `val_samples` validation inputs of the
    mixture, within the `steps` budget (None: exactly `steps`)."""

    cfg: ModelConfig
    mixture: Mixture
    steps: int
    batch_size: int = 64
    optim: OptimConfig = OptimConfig()
    stop_rule: object = None
    val_samples: int = DEFAULT_VAL_SAMPLES

    def key(self) -> dict:
        """The cache key's content (`pretrain_config`)."""
        return pretrain_config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def pretrain_config(cfg: ModelConfig, mixture: Mixture, steps: int, batch_size: int, optim: OptimConfig,
                    stop_rule=None, val_samples: int = DEFAULT_VAL_SAMPLES) -> dict:
    """The cache key's content: a `BaseSpec`'s fields, as stored in an entry's config.json."""
    model_config = dataclasses.asdict(cfg)
    if model_config["compute_dtype"] is None:  # keeps the keys of entries made before the field existed
        del model_config["compute_dtype"]
    optim_config = dataclasses.asdict(optim)
    for flag in ("decay_all", "clip_per_tensor"):  # off: absent, keeping the keys made before the options
        if not optim_config[flag]:
            del optim_config[flag]
    config = {"model_config": model_config, "pretrain": mixture.spec, "vocab_size": mixture.vocab_size,
              "steps": steps, "batch_size": batch_size, "optim": optim_config, "numerics": NUMERICS,
              "checkpoint_format": ckpt.FORMAT}  # an entry of an older format is another entry, not an error
    if stop_rule is not None:  # absent for fixed steps, so the entries made before the option keep their keys
        config["stopping"] = {**stop_rule.key(), "val_samples": val_samples}
    return json.loads(json.dumps(config, sort_keys=True))  # as it reads back from meta.json


def base_dir(cache: Path, config: dict) -> Path:
    return Path(cache) / f"base-{ckpt.content_hash(config)}"


def load_or_pretrain(cache: Path, spec: BaseSpec, seeds: list[int], *, chunk: int = 250, progress: bool = True,
                     save_every_s: float = 60.0, log=print, copy_to: Path | None = None):
    """Bases for `seeds`, from the cache where present, pretrained (and stored) otherwise; `copy_to`: a directory
    that also receives each seed's checkpoint (a run directory's ckpt/base, so it stands on its own).
    Returns (graphdef, params_E, losses_EU (NaN after a seed's stop), wall_E (pretraining seconds per seed), cached
    seeds, steps_used_E)."""
    config = spec.key()
    cfg, mixture, steps = spec.cfg, spec.mixture, spec.steps
    entry = base_dir(cache, config).name
    at = lambda name: inside(cache, f"{entry}/{name}", "base cache")  # nothing outside the cache root
    root = at("train.lock").parent
    graphdef, abstract = abstract_model(cfg)
    like = {"params": abstract, "losses": jax.ShapeDtypeStruct((steps,), jnp.float32)}
    root.mkdir(parents=True, exist_ok=True)
    # one trainer per cache entry: a second sweep that needs these bases waits, then restores them
    waiting = lambda pid: log(f"base cache {root}: process {pid} is training these bases; waiting for it")
    writer = is_writer()
    with PidLock(at("train.lock"), wait=True, on_wait=waiting) if writer else contextlib.nullcontext():
        stored, missing, diverged = {}, [], []
        if writer:
            for s in seeds:
                ckpt.recover(at(f"seed-{s}"))
        # with several processes, process 0 decides which bases exist (they all train the rest together)
        present = agree([ckpt.exists(at(f"seed-{s}")) if writer else False for s in seeds])
        for s, here in zip(seeds, present):
            if here:
                stored[s] = _restore(at(f"seed-{s}"), like, config, steps)
            else:
                missing.append(s)
        if stored:
            log(f"base cache {root}: seeds {sorted(stored)} restored, not retrained")
        if missing:
            if writer:
                ckpt.write_json_atomic(at("config.json"), config)
            # one state file for the missing seeds together: they train in one program (several processes keep
            # no chunk state: they would have to restore it together)
            resume = (None if is_multi() else
                      ckpt.ChunkCheckpoint(at(f"seed-{'-'.join(map(str, missing))}.partial"), save_every_s))
            stopping = (None if spec.stop_rule is None else
                        EarlyStopping(spec.stop_rule, make_validator(base_builder(graphdef), mixture, spec.val_samples)))
            _, params_E, losses_EU, wall = pretrain(cfg, mixture, missing, steps, spec.batch_size, spec.optim, chunk,
                                                    progress, resume=resume, stopping=stopping)
            for i, s in enumerate(missing):
                params = jax.tree.map(lambda x: x[i], params_E)
                used = steps if stopping is None else int(stopping.stop_step[i])
                stop = {} if stopping is None else {"steps_used": used,
                                                    "stop_reason": STOP_REASONS[int(stopping.reason[i])]}
                if not is_finite(params, losses_EU[i, :used]):
                    diverged.append(s)  # never cached: a later sweep trains it again (and it diverges again)
                elif writer:
                    ckpt.save(at(f"seed-{s}"), {"params": params, "losses": losses_EU[i]},
                              {"kind": "pretrained base", "config": config, "seed": s, "wall_s": wall / len(missing),
                               **stop})
                stored[s] = (params, losses_EU[i], wall / len(missing), used)
            if resume is not None:
                resume.clear()
            good = [s for s in missing if s not in diverged]
            log(f"base cache {root}: " + (f"seeds {good} pretrained and stored" if good else "")
                + ("; " if good and diverged else "")
                + (f"seeds {diverged} diverged (non-finite loss or parameters): not cached, their rows are "
                   "marked diverged" if diverged else ""))
    if copy_to is not None:
        for s in seeds:
            dst = inside(copy_to, f"seed-{s}")
            if s not in diverged and not _intact(dst):
                remove(dst)
                shutil.copytree(at(f"seed-{s}"), dst)
    params_E = jax.tree.map(lambda *xs: jnp.stack(xs), *[stored[s][0] for s in seeds])
    losses_EU = np.stack([stored[s][1] for s in seeds])
    return (graphdef, params_E, losses_EU, np.array([stored[s][2] for s in seeds]), sorted(set(seeds) - set(missing)),
            np.array([stored[s][3] for s in seeds]))


def is_finite(params, losses_U) -> bool:
    """Whether a base's parameters and its losses (up to its stop) are all finite: what may be cached as good."""
    leaves = jax.tree.leaves(to_host(params))
    return bool(np.isfinite(np.asarray(losses_U)).all()) and all(bool(np.isfinite(x).all()) for x in leaves)


def _restore(d: Path, like, config: dict, steps: int) -> tuple:
    """(params, losses, wall_s, steps_used) of a cached base, refused in one line unless it is finite."""
    hint = f"remove {d} to retrain that base"
    tree = ckpt.restore(d, like, expect={"config": config}, hint=hint)
    meta = ckpt.checked(ckpt.read_meta(d), {"wall_s": S.FINITE, "steps_used": S.COUNT}, d / "meta.json",
                        optional_keys=("steps_used",))
    used = meta.get("steps_used", steps)
    losses = np.asarray(tree["losses"])
    if not is_finite(tree["params"], losses[:used]):
        raise ckpt.CheckpointError(f"{d}: cached base is not finite (NaN or inf in its parameters or losses); {hint}")
    return tree["params"], losses, meta["wall_s"], used


def _intact(directory: Path) -> bool:
    try:
        return ckpt.exists(directory) and bool(ckpt.verify(directory))
    except ckpt.CheckpointError:
        return False
