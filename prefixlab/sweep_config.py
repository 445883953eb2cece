"""SweepConfig: everything that decides a sweep's results or where its state lives, frozen and validated.

    config = SweepConfig(model="tiny", pretrain="add1", tasks=("add1", "sort_asc"), methods=("none", "prefix"))
    SweepConfig.from_json(config.to_json()) == config     # what <run_dir>/config.json holds

Field names follow the `scripts/sweep.py` flags (`--tune-lr` -> `tune_lr`, `--no-cross-eval` -> `cross_eval`).
Sequences may be given as lists or comma strings; they are stored as tuples. A method's own settings are the fields
of its dataclass, swept per method: settings={"lora": {"rank": (1, 2)}} (flags --lora.rank 1,2).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

from prefixlab import schema
from prefixlab import tasks as T
from prefixlab.bases import default_cache_dir
from prefixlab.config import PRESETS, ModelConfig, preset
from prefixlab.evaluate import DEFAULT_VAL_SAMPLES, EVAL_BATCH
from prefixlab.stopping import TRANSITION_SAFE, StopRule
from prefixlab.train import REFERENCE_TUNING, OptimConfig
from prefixlab.methods import MAX_CONTEXT_LEN, METHODS, MethodError, match_lora_to_prefix
from prefixlab.methods import settings as MS

# the default sweep's methods (fixed: a newly registered method does not change what the default sweep runs)
DEFAULT_METHODS = ("none", "prompt", "soft_prompt", "prefix", "prefix_kv", "lora", "full")
# the default learning-rate grid: a decade either side of each method's default, selected on validation
LR_GRID = (0.1, 1.0, 10.0)
CONFIG_VERSION = 3  # config.json layout; 1 (before the library) stored argv; 3: run directories have a manifest
MAX_MEMORY_BYTES = 2**40  # a request estimated above this (1 TiB) is refused before anything runs
MAX_PROMPT_SEARCH_LEN = 8
COMPUTE_DTYPES = ("float32", "bfloat16")  # the hard-prompt search grows as V^P


# Named starting points for a sweep: the SweepConfig fields each sets (anything given explicitly overrides them).
SWEEP_PRESETS = {
    # for trying things out: learns sort/add tasks, about 1.5 min on 2 CPU cores (docs/guide/your-question.md)
    "minute": dict(model="paper-exp1", pretrain_steps=2000, tune_steps=250, seeds=1, eval_samples=800,
                   methods=("none", "prefix", "lora")),
}


# How tuning runs train: prefixlab's own protocol, or the reference's (Petrov et al.'s minGPT trainers).
PROTOCOLS = {
    "fair": "a grid of learning rates selected on the validation split, runs stopped at convergence",
    "reference": "the reference's optimizer (AdamW, decay 0.01 on the tuned tensors, per-tensor clipping at 1.0), "
                 "fixed steps, one learning rate per method",
}


class SweepError(ValueError):
    """A sweep that cannot run as configured; `field` names the offending SweepConfig field (or None)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


_ELEMENT = {str: ((str,), "strings"), int: ((int, str), "integers"), float: ((int, float, str), "numbers")}


def _tuple(value, kind=str, field=None) -> tuple:
    given = value
    accepts, names = _ELEMENT[kind]
    if isinstance(value, str):
        value = T.split_specs(value) if field in ("tasks", "tune_tasks") else [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, accepts) for v in value):
        raise SweepError(f"{field} needs a comma list of {names}, got {given!r}", field)
    try:
        return tuple(kind(v) for v in value)
    except ValueError:
        raise SweepError(f"{field} needs a comma list of {names}, got {given!r}", field) from None


# the kind of each scalar field, checked before anything uses it (a float count or a string flag from a hand-edited
# config.json or the Python API is refused in one line, not deep inside JAX); sequences are checked by _tuple
_PATH = schema.Kind("a path or null", lambda v: v is None or isinstance(v, (str, os.PathLike)))
SCALAR_KINDS = {**dict.fromkeys(("pretrain_steps", "batch_size", "seeds", "tune_steps", "patience", "val_samples",
                                 "eval_samples", "chunk"), schema.INT),
                **dict.fromkeys(("lr", "stop_tol", "stop_min_fraction", "stop_patience_growth"), schema.NUMBER),
                **dict.fromkeys(("match_params", "stopping", "pretrain_stopping", "cross_eval", "stop_trend",
                                 "shared_base"), schema.BOOL),
                **dict.fromkeys(("model", "compute_dtype", "protocol"), schema.STR),
                "variant": schema.optional(schema.STR), "cache_dir": _PATH}


def group_name(task: T.Mixture, method) -> str:
    """A group's name: results.jsonl's `group`, the manifest's key and its checkpoint's path under ckpt/."""
    return f"{task.spec}/{method.tag}"


def parse_shard(value) -> tuple[int, int]:
    """'i/N' or (i, N) -> (i, N)."""
    try:
        i, n = (value.split("/") if isinstance(value, str) else value)
        if any(isinstance(v, (bool, float)) for v in (i, n)):
            raise TypeError
        return int(i), int(n)
    except (ValueError, TypeError):
        raise SweepError(f"grid_shard must be i/N (e.g. 0/4), got {value!r}", "grid_shard") from None


def parse_lr_table(text: str) -> dict[str, list[float]]:
    """'1e-3,5e-3' (every method) or 'prefix=5e-4,lora=5e-3' -> {method or "*": [lr, ...]} (the --tune-lr syntax)."""
    table: dict[str, list[float]] = {}
    for item in text.split(",") if text else []:
        method, _, value = item.rpartition("=")
        try:
            table.setdefault(method.strip() or "*", []).append(float(value))
        except ValueError:
            raise SweepError(f"tune_lr needs numbers, got {text!r}", "tune_lr") from None
    return table


def _settings_dict(value) -> dict:
    """{method: {setting: values}} from the stored tuple form, a dict, or JSON's lists."""
    if isinstance(value, tuple):
        return {m: dict(fields) for m, fields in value}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise SweepError(f"settings must map each method to {{setting: values}}, got {value!r}", "settings")
    return value


def legacy_settings(fields: dict) -> dict:
    """`fields` with the method settings of config.json files (and Python calls) from before methods owned their
    settings (lora_ranks, prefix_inits, ...: each method's `aliases`) moved into `settings`."""
    fields = dict(fields)
    settings = {m: dict(v) for m, v in _settings_dict(fields.pop("settings", {})).items()}
    for cls in METHODS.values():
        for old, name in cls.aliases.items():
            if old in fields:
                settings.setdefault(cls.name, {}).setdefault(name, fields.pop(old))
    return {**fields, "settings": settings} if settings else fields


def _lr_table(value) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """{method or "*": lrs} -> a sorted tuple of pairs, so the frozen config stays hashable."""
    if value is None or isinstance(value, str):
        value = parse_lr_table(value)
    items = dict(value).items() if not isinstance(value, tuple) else value
    return tuple(sorted((str(m), tuple(float(v) for v in (lrs if isinstance(lrs, (list, tuple)) else [lrs])))
                        for m, lrs in items))


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    pretrain: str = "sort_asc"  # a task, or a comma list: a uniform mixture with no task indicator
    tasks: tuple[str, ...] = ("sort_asc", "sort_desc")
    tune_tasks: tuple[str, ...] | None = None  # None: tune on every task of `tasks`
    model: str = "paper-exp1"
    variant: str | None = None  # None: classic unless a task exists only in extended
    pretrain_steps: int = 10000
    batch_size: int = 64
    lr: float = 5e-4  # pretraining
    seeds: int = 2
    methods: tuple[str, ...] = DEFAULT_METHODS
    # {method: {setting: values}}: each group of a method is one combination of its settings' values (a setting not
    # given: its default); stored resolved for every method the sweep runs, so a config.json keeps its meaning
    settings: tuple = ()
    prefix_lengths: tuple[int, ...] = (1,)
    match_params: bool = False  # also a LoRA matched to each prefix length's parameter count (lora's other settings)
    tune_steps: int = 1500  # the budget: with `stopping`, a run ends earlier once it converges
    tune_lr: tuple[tuple[str, tuple[float, ...]], ...] = ()  # given as {method or "*": (lr, ...)} or "prefix=5e-3"
    lr_grid: tuple[float, ...] = LR_GRID  # multiples of a method's default rate tried where tune_lr names none
    stopping: bool = True  # stop each run at convergence on the validation split (prefixlab/stopping.py)
    patience: int = 4  # validations (one per chunk) without a validation-loss gain of stop_tol before a run stops
    stop_tol: float = 1e-3  # nats
    # guards against stopping right before a delayed transition (stopping.TRANSITION_SAFE; 0 / 0 / False: off)
    stop_min_fraction: float = TRANSITION_SAFE.min_fraction  # no plateau stop before this fraction of the budget
    stop_patience_growth: float = TRANSITION_SAFE.patience_growth  # patience >= this fraction of validations done
    stop_trend: bool = TRANSITION_SAFE.trend  # no plateau stop while the training loss still falls
    protocol: str = "fair"  # "fair": lr grid, validation selection, stopping; "reference": PROTOCOLS below
    pretrain_stopping: bool = False  # pretraining too stops at convergence (same rule); off: the presets' fixed steps
    shared_base: bool = False  # every seed tunes on base seed 0 (the reference pretrained one base); off: one each
    val_samples: int = DEFAULT_VAL_SAMPLES
    eval_samples: int = 3200
    chunk: int = 250
    cross_eval: bool = True
    compute_dtype: str = "float32"  # or "bfloat16": the Linear matmuls' operands (prefixlab/precision.py)
    grid_shard: tuple[int, int] | None = None  # (i, N): only the groups numbered i mod N (prefixlab/shards.py)
    cache_dir: str | None = None  # None: $PREFIXLAB_CACHE or runs/base-cache, fixed when the sweep starts

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)
        for name, kind in SCALAR_KINDS.items():
            if not kind.ok(getattr(self, name)):
                raise SweepError(f"{name} must be {kind.text}, got {getattr(self, name)!r}", name)
        if not isinstance(self.pretrain, str):
            fix("pretrain", ",".join(_tuple(self.pretrain, str, "pretrain")))
        try:
            fix("pretrain", ",".join(T.split_specs(self.pretrain)))
            for name in ("tasks", "methods"):
                fix(name, _tuple(getattr(self, name), str, name))
            if self.tune_tasks is not None:
                fix("tune_tasks", _tuple(self.tune_tasks, str, "tune_tasks"))
        except T.TaskError as e:
            raise SweepError(str(e), "tasks") from e
        fix("prefix_lengths", _tuple(self.prefix_lengths, int, "prefix_lengths"))
        fix("lr_grid", _tuple(self.lr_grid, float, "lr_grid"))
        fix("tune_lr", _lr_table(self.tune_lr))
        if self.cache_dir is not None:  # absolute, so a stored config means the same place from any directory
            fix("cache_dir", str(Path(self.cache_dir).absolute()))
        if self.grid_shard is not None:
            fix("grid_shard", parse_shard(self.grid_shard))
        self._validate()

    # --- validation ---------------------------------------------------------------------------------------------

    def _validate(self):
        def check(ok, field, message):
            if not ok:
                raise SweepError(message, field)

        check(self.model in PRESETS, "model", f"unknown model {self.model!r}; valid: {', '.join(PRESETS)}")
        check(self.compute_dtype in COMPUTE_DTYPES, "compute_dtype",
              f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")
        for name in ("pretrain_steps", "tune_steps", "seeds", "batch_size", "eval_samples", "chunk", "patience",
                     "val_samples"):
            check(getattr(self, name) >= 1, name, f"{name} must be >= 1, got {getattr(self, name)}")
        finite_positive = lambda v: math.isfinite(v) and v > 0
        check(finite_positive(self.lr), "lr", f"lr must be a finite positive number, got {self.lr}")
        check(self.lr_grid and all(finite_positive(v) for v in self.lr_grid), "lr_grid",
              f"lr_grid needs finite positive multiples, got {list(self.lr_grid)}")
        check(math.isfinite(self.stop_tol) and self.stop_tol >= 0, "stop_tol",
              f"stop_tol must be a finite number >= 0, got {self.stop_tol}")
        for name in ("stop_min_fraction", "stop_patience_growth"):
            check(0 <= getattr(self, name) <= 1, name, f"{name} must be in [0, 1], got {getattr(self, name)}")
        check(self.protocol in PROTOCOLS, "protocol",
              f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        check(self.protocol != "reference" or (not self.stopping and len(self.lr_grid) == 1), "protocol",
              "protocol 'reference' trains fixed steps at one learning rate per method: give stopping=False "
              "(--no-stopping) and lr_grid=(1,) (--lr-grid 1), or use SweepConfig.reference_protocol()")
        check(self.tasks, "tasks", "tasks must name at least one, got none")
        bad = [m for m in self.methods if m not in METHODS]
        check(self.methods and not bad, "methods", f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")
        object.__setattr__(self, "settings", self._resolved_settings())
        check(min(self.prefix_lengths, default=0) >= 1, "prefix_lengths", "prefix_lengths must be >= 1")
        check(max(self.prefix_lengths) <= MAX_CONTEXT_LEN, "prefix_lengths",
              f"prefix_lengths up to {MAX_CONTEXT_LEN} (the longest context the model takes), got {max(self.prefix_lengths)}")
        check("prompt" not in self.methods or max(self.prefix_lengths) <= MAX_PROMPT_SEARCH_LEN, "prefix_lengths",
              f"prefix_lengths above {MAX_PROMPT_SEARCH_LEN} make the hard-prompt search too long; drop 'prompt' or shorten")
        gradient = [m for m, cls in METHODS.items() if cls.training == "gradient"]
        for m, lrs in self.tune_lr:
            check(m == "*" or m in gradient, "tune_lr",
                  f"tune_lr names {m!r}, which has no learning rate; valid: {', '.join(gradient)}")
            check(all(finite_positive(v) for v in lrs), "tune_lr",
                  f"tune_lr values must be finite positive numbers, got {list(lrs)}")
        try:
            self.task_mixes, self.model_config, self.method_groups()  # noqa: B018 (they raise on bad specs)
        except T.TaskError as e:
            raise SweepError(str(e), "tasks") from e
        except MethodError as e:
            raise SweepError(str(e), "methods") from e
        self._check_tags()
        if self.tune_tasks is not None:
            try:
                tune = [T.parse_mixture(t, self.task_variant).spec for t in self.tune_tasks]
            except T.TaskError as e:
                raise SweepError(str(e), "tune_tasks") from e
            bad = [t for t in tune if t not in {m.spec for m in self.task_mixes}]
            check(not bad, "tune_tasks", f"tune_tasks must be tasks of --tasks; {', '.join(bad)} not in {','.join(self.tasks)}")
        if self.grid_shard is not None:
            i, n = self.grid_shard
            n_groups = len(self.groups(sharded=False))
            check(0 <= i < n, "grid_shard", f"grid_shard i/N needs 0 <= i < N, got {i}/{n}")
            check(n <= n_groups, "grid_shard", f"grid_shard {i}/{n}: the sweep has only {n_groups} group(s), so "
                  f"shard {i} would run nothing; use N <= {n_groups}")
        self.check_fits(MAX_MEMORY_BYTES, f"the {MAX_MEMORY_BYTES / 2**30:,.0f} GiB limit")

    def _resolved_settings(self) -> tuple:
        """`settings` for every method the sweep runs, each setting's values given or its default, as a sorted
        tuple ((method, ((setting, values), ...)), ...); settings of methods the sweep does not run are dropped."""
        given = _settings_dict(self.settings)
        runs = set(self.methods) | ({"lora"} if self.match_params else set())
        unknown = sorted(set(given) - set(METHODS))
        if unknown:
            raise SweepError(f"settings names unknown method(s) {unknown}; valid: {', '.join(METHODS)}", "settings")
        out = []
        for m in sorted(runs):
            cls, mine = METHODS[m], given.get(m, {})
            try:
                for name in mine:
                    MS.known(cls, name)
                out.append((m, tuple((f.name, MS.values_of(cls, f.name, mine[f.name]) if f.name in mine
                                      else (f.default,)) for f in MS.fields(cls))))
            except MS.SettingError as e:
                field = str(e).split(" ", 1)[0]
                raise SweepError(str(e), field if field.startswith(f"{m}.") else "settings") from None
        return tuple(out)

    def settings_of(self, method: str) -> dict[str, tuple]:
        """{setting: values} of `method` in this sweep (its defaults where the sweep does not run it)."""
        stored = dict(self.settings).get(method)
        return dict(stored) if stored is not None else {f.name: (f.default,) for f in MS.fields(METHODS[method])}

    def _check_tags(self) -> None:
        """Two groups of a method whose tags are equal would share a checkpoint and a summary row: refused, naming
        the settings its tag does not show."""
        seen = {}
        for group in self.method_groups():
            other = seen.setdefault(group.tag, group)
            if other != group:
                differ = [f.name for f in MS.fields(group) if getattr(group, f.name) != getattr(other, f.name)]
                raise SweepError(f"{group.name}: groups with other {', '.join(differ)} share the tag {group.tag!r} "
                                 f"(their results would mix); sweep one value of {', '.join(differ)} at a time",
                                 f"{group.name}.{differ[0]}" if differ else "settings")

    # --- memory ---------------------------------------------------------------------------------------------------

    def memory_parts(self, **fields) -> dict[str, int]:
        """Bytes a group's program holds at most, roughly, by phase (`fields` override this config's): the weights
        (4 float32 copies of the model per seed: weights, gradients, Adam's two moments), and the largest of
        training (per run and example the activations kept for the backward pass), validation (all its samples in
        one forward pass per run) and evaluation (the test samples, every run's predictions, and one decoding batch
        per run)."""
        from prefixlab.model import abstract_model, count_params

        get = lambda name: fields.get(name, getattr(self, name))
        cfg = self.model_config
        n_params = count_params(abstract_model(cfg)[1])
        S = 2 * T.SEQ_LEN - 1 + max(self.prefix_lengths)
        act = cfg.n_layer * S * (8 * cfg.d_model + 2 * max(cfg.hidden, default=0) + 2 * cfg.n_head * S) * 4
        logits = S * cfg.vocab_size * 4
        runs = get("seeds") * len(self.prefix_lengths) * max([len(v) for _, v in self.tune_lr] + [len(self.lr_grid)])
        n_eval = get("eval_samples")
        sample = 8 * (2 * T.SEQ_LEN - 1) * 4  # tokens, targets, mask and what sampling them takes, int32/float32
        return {"weights": get("seeds") * n_params * 16,
                "training": runs * get("batch_size") * act * 2,
                "validation": runs * get("val_samples") * (act + 2 * logits),
                "evaluation": n_eval * sample + runs * n_eval * T.SEQ_LEN * 5
                + runs * min(EVAL_BATCH, n_eval) * (S * 2 * cfg.n_layer * cfg.d_model * 4 + 2 * logits)}

    def memory_estimate(self, **fields) -> int:
        parts = self.memory_parts(**fields)
        return parts["weights"] + max(parts["training"], parts["validation"], parts["evaluation"])

    def check_fits(self, limit: int, what: str) -> None:
        """SweepError in one line if the estimate is above `limit` bytes (`what`, say "this machine's 16 GiB"):
        it names the field that drives the largest phase and the largest value of it that would fit."""
        need = self.memory_estimate()
        if need <= limit:
            return
        parts = self.memory_parts()
        phase = max(("training", "validation", "evaluation"), key=parts.get)
        field = ("seeds" if parts["weights"] >= parts[phase] else
                 {"training": "batch_size", "validation": "val_samples", "evaluation": "eval_samples"}[phase])
        low, high = 0, getattr(self, field)  # the largest value that fits: low fits (or is 0), high does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.memory_estimate(**{field: mid}) <= limit else (low, mid)
        fits = (f"{field} up to {low:,} would fit" if low else
                "lower seeds, batch_size, prefix_lengths, tune_lr, val_samples or eval_samples")
        raise SweepError(f"{field} {getattr(self, field):,}: the sweep needs about {need / 2**30:,.1f} GiB by estimate "
                         f"({phase} {parts[phase] / 2**30:,.1f} GiB, weights and Adam state "
                         f"{parts['weights'] / 2**30:,.1f} GiB), above {what}; {fits}", field)

    # --- what the sweep runs ------------------------------------------------------------------------------------

    @functools.cached_property
    def task_variant(self) -> T.Variant:
        try:
            return T.choose_variant(T.split_specs(self.pretrain) + list(self.tasks), self.variant)
        except T.TaskError as e:
            raise SweepError(str(e), "tasks") from e

    @property
    def variant_reason(self) -> str:
        """Why every task of the sweep (and its base) uses `task_variant`, for the sweep's first log line."""
        if self.variant is not None:
            return "as asked (variant)"
        only_extended = T.extended_only(s.split("+") for s in T.split_specs(self.pretrain) + list(self.tasks))
        if only_extended:
            return f"for every task, since {', '.join(only_extended)} exist(s) only in extended"
        return "default, every task exists in classic"

    @functools.cached_property
    def pretrain_mix(self) -> T.Mixture:
        return T.parse_mixture(self.pretrain, self.task_variant)

    @functools.cached_property
    def task_mixes(self) -> list[T.Mixture]:
        self.pretrain_mix  # noqa: B018 (a bad pretraining spec is reported first)
        return [T.parse_mixture(t, self.task_variant) for t in self.tasks]

    @property
    def tune_task_specs(self) -> list[str]:
        if self.tune_tasks is None:
            return [m.spec for m in self.task_mixes]
        return [T.parse_mixture(t, self.task_variant).spec for t in self.tune_tasks]

    @functools.cached_property
    def model_config(self) -> ModelConfig:
        low = None if self.compute_dtype == "float32" else self.compute_dtype
        return preset(self.model, vocab_size=self.task_variant.vocab_size, compute_dtype=low)

    def learning_rates(self, method: str) -> list[float]:
        """The tuning learning rates of `method`: its tune_lr entry, else the "*" entry, else lr_grid x its
        default (rounded to 3 significant digits, so 10 x 5e-3 reads 0.05); [0.0] for a method that does not train
        by gradient. Read from the registry now, so a method registered after import gets its own."""
        cls = METHODS[method]
        if cls.training != "gradient":
            return [0.0]
        table = dict(self.tune_lr)
        grid = tuple(float(f"{f * cls.default_lr:.3g}") for f in self.lr_grid)
        return list(table.get(method, table.get("*", grid)))

    @property
    def stop_rule(self):
        """The stopping.StopRule tuning runs use, or None (fixed steps)."""
        return self._rule(self.stopping)

    @property
    def pretrain_stop_rule(self):
        """The StopRule pretraining uses with pretrain_stopping (the cache keys a base by it), or None."""
        return self._rule(self.pretrain_stopping)

    def _rule(self, on: bool):
        return StopRule(self.patience, self.stop_tol, self.stop_min_fraction, self.stop_patience_growth,
                        self.stop_trend) if on else None

    @property
    def base_seeds(self) -> list[int]:
        """The seeds whose bases are pretrained: all of them, or only seed 0 when they share one base."""
        return [0] if self.shared_base else list(range(self.seeds))

    @property
    def tune_optim(self) -> OptimConfig:
        """The tuning optimizer: AdamW without weight decay, clipped by the global norm (fair), or the reference's
        (decay 0.01 on every tuned tensor, each tensor clipped on its own)."""
        return REFERENCE_TUNING if self.protocol == "reference" else OptimConfig(weight_decay=0.0)

    def reference_protocol(self) -> "SweepConfig":
        """This sweep under the reference's protocol: its tuning optimizer, fixed `tune_steps`, one learning rate
        per method (tune_lr, else each method's default)."""
        return dataclasses.replace(self, protocol="reference", stopping=False, lr_grid=(1.0,))

    def method_groups(self) -> list:
        """[Method]: one compiled group each; each method class says which groups its settings' values ask for."""
        groups = [g for m in self.methods for g in METHODS[m].sweep_groups(self.settings_of(m))]
        return groups + [lora for lora in self.matched_loras() if lora not in groups]

    def matched_loras(self) -> dict:
        """With match_params, {LoRA: {"matched_prefix_len", "matched_prefix_params", "param_ratio"}}: for every
        prefix length the LoRA closest in trainable parameters (methods.match_lora_to_prefix); lengths with the same
        match share one."""
        if not self.match_params:
            return {}
        out = {}
        templates = METHODS["lora"].sweep_groups(self.settings_of("lora"))  # the sweep's other LoRA settings
        for p in self.prefix_lengths:
            lora, n_lora, n_prefix = match_lora_to_prefix(self.model_config, p)
            for template in templates:
                matched = dataclasses.replace(template, rank=lora.rank, targets=lora.targets)
                out.setdefault(matched, dict(matched_prefix_len=p, matched_prefix_params=n_prefix,
                                             param_ratio=round(n_lora / n_prefix, 4)))
        return out

    def groups(self, sharded: bool = True) -> list[tuple]:
        """[(task Mixture, Method)] in the order the sweep runs them; with `sharded`, only this grid shard's."""
        grid = [(task, method) for task in self.task_mixes for method in self.method_groups()
                if method.training == "none" or task.spec in self.tune_task_specs]  # the base: on every task
        if not sharded or self.grid_shard is None:
            return grid
        i, n = self.grid_shard
        return grid[i::n]

    # --- files --------------------------------------------------------------------------------------------------

    def resolved(self) -> SweepConfig:
        """The config with its cache directory fixed (the default read now), as a run directory stores it."""
        return dataclasses.replace(self, cache_dir=str(self.cache_dir or default_cache_dir()))  # __post_init__ makes it absolute

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["tune_lr"] = {m: list(lrs) for m, lrs in self.tune_lr}
        d["settings"] = {m: dict(fields) for m, fields in self.settings}
        if self.grid_shard is None:
            del d["grid_shard"]  # an unsharded config.json reads as it did before sharding existed
        return json.loads(json.dumps(d))  # tuples -> lists, as it reads back

    @classmethod
    def preset(cls, name: str, **fields) -> SweepConfig:
        """The sweep preset `name` (SWEEP_PRESETS) with `fields` on top, e.g. preset("minute", pretrain="add1")."""
        if name not in SWEEP_PRESETS:
            raise SweepError(f"preset: unknown sweep preset {name!r}; valid: {', '.join(SWEEP_PRESETS)}", "preset")
        return cls(**{**SWEEP_PRESETS[name], **fields})

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        """The config `to_dict` wrote; one from before methods owned their settings reads as it ran."""
        d = legacy_settings(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SweepError(f"unknown SweepConfig field(s) {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SweepConfig:
        return cls.from_dict(json.loads(text))

    def differences(self, other: SweepConfig) -> list[str]:
        """The fields whose values differ from `other`'s."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def load_config(run_dir) -> SweepConfig:
    """The SweepConfig stored in `<run_dir>/config.json`, checked by key and type: a damaged or hand-edited file is
    a SweepError naming the file and the field."""
    path = Path(run_dir) / "config.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"cannot resume {run_dir}: {path} is missing or unreadable ({type(e).__name__})") from e
    if isinstance(stored, dict) and stored.get("config_version") != CONFIG_VERSION:
        raise SweepError(f"cannot resume {run_dir}: its config.json was written by an older prefixlab (no "
                         f"config_version {CONFIG_VERSION}); rerun it into a new directory")
    try:
        schema.check({"sweep": schema.OBJECT}, stored, str(path))
        # a run directory from before a setting existed ran as it did then: LoRA at alpha / r, one learning rate per
        # method, fixed steps, the first stopping rule
        legacy = {"lr_grid": (1.0,), "stopping": False, "stop_min_fraction": 0.0, "stop_patience_growth": 0.0,
                  "stop_trend": False, **({} if "settings" in stored["sweep"] else {"lora_scaling": "peft"})}
        return SweepConfig.from_dict({**legacy, **stored["sweep"]})
    except (schema.SchemaError, SweepError) as e:
        raise SweepError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}",
                         getattr(e, "field", None)) from None
