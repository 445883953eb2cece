"""One run's record, results.jsonl's line: its type (`Record`), the one place a sweep builds it (`build`), and its
schema for readers (`KINDS`, `REQUIRED`), derived from the type. A method's own settings are further keys, named as
the method states them (`Method.record_fields`); tables tell groups apart by `group`, never by those keys."""

# no `from __future__ import annotations` here: TypedDict reads NotRequired from evaluated annotations only
import types
import typing
from typing import NotRequired, TypedDict

from prefixlab import schema as S


class Measured(TypedDict):
    """What tuning a run measured (tune.tune_group), before the sweep says what ran."""

    seed: NotRequired[int]  # absent only from the oldest run directories
    context_len: int | None
    lr: float | None
    trainable_params: int
    exact_match: float | None  # test split, greedy decoding; None where the run diverged
    token_accuracy: float | None
    wall_s: float | None
    final_loss: NotRequired[float | None]
    val_loss: NotRequired[float | None]
    val_exact_match: NotRequired[float | None]
    steps_used: NotRequired[int | None]
    stop_reason: NotRequired[str]
    status: NotRequired[str]  # "ok" or "diverged"
    loss_curve: NotRequired[list[float | None]]
    val_curve: NotRequired[dict]  # {"step", "loss", "exact_match"}: every validation up to the stop
    loss_falling_at_stop: NotRequired[bool]
    cross_exact_match: NotRequired[dict[str, float | None]]  # {other task: exact match on it}


class Record(Measured):
    """Measured, with what ran. Keys marked NotRequired may be absent from older run directories' records."""

    task: str
    method: str
    steps: int | None  # the tuning budget; for the base ("none"), pretraining's
    group: NotRequired[str]  # "<task>/<method tag>": what tables, selection and resume key on
    pretrain: NotRequired[str]
    pretrain_steps: NotRequired[int]
    model: NotRequired[str]
    variant: NotRequired[str]
    selected: NotRequired[bool]  # this run's learning rate was chosen on validation (selection.py)
    matched_prefix_len: NotRequired[int]  # --match-params LoRA: the prefix it matches and the counts' ratio
    matched_prefix_params: NotRequired[int]
    param_ratio: NotRequired[float]


def _kind(t) -> S.Kind:
    simple = {str: S.STR, int: S.INT, float: S.NUMBER, bool: S.BOOL, dict: S.OBJECT}
    if t in simple:
        return simple[t]
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return S.optional(_kind(inner))
    if origin is list:
        return S.list_of(_kind(args[0]))
    if origin is dict:
        return S.object_of(_kind(args[1]))
    raise TypeError(f"no schema kind for {t!r}")


_HINTS = typing.get_type_hints(Record)
# what ran first, then what was measured (the order messages name missing keys in)
KINDS = {k: _kind(_HINTS[k]) for k in [*(k for k in _HINTS if k not in Measured.__annotations__),
                                       *Measured.__annotations__]}
REQUIRED = tuple(k for k in KINDS if k in Record.__required_keys__)
OPTIONAL = tuple(k for k in KINDS if k not in REQUIRED)


def build(measured: Measured, *, task: str, group: str, method, steps: int, pretrain: str, pretrain_steps: int,
          model: str, variant: str, matched: dict | None = None, base: dict | None = None) -> Record:
    """The record of one run of `method` (a Method) in `group`. base: for the untuned base (training "none"), its
    pretraining's {"final_loss", "trainable_params", "wall_s", "lr", "steps_used", "loss_curve"}; diverged: a base
    whose pretraining diverged, so nothing measured on it counts."""
    own = method.record_fields()
    clash = sorted(set(own) & set(KINDS))
    if clash:
        raise ValueError(f"method {method.name}: its column(s) {clash} would overwrite the record's own; rename "
                         "them in its `columns`")
    record = {**measured, "pretrain": pretrain, "model": model, "variant": variant, "pretrain_steps": pretrain_steps,
              "group": group, "task": task, "method": method.name, **own, **(matched or {}),
              "steps": steps, **(base or {})}
    return typing.cast(Record, record)


def diverged(record: Record) -> Record:
    """`record` of a run on a base whose pretraining diverged: marked so, its scores None."""
    record.update(status="diverged", exact_match=None, token_accuracy=None, val_loss=None, val_exact_match=None)
    if "cross_exact_match" in record:
        record["cross_exact_match"] = dict.fromkeys(record["cross_exact_match"])
    return record


def group_of(record: dict) -> str:
    """The record's group (records from before groups were named: task and method)."""
    return record.get("group") or f"{record['task']}/{record['method']}"


def label(record: dict) -> str:
    """The group's name without its task: the method and its settings as its tag shows them."""
    group = group_of(record)
    prefix = f"{record['task']}/"
    return group[len(prefix):] if group.startswith(prefix) else group.rsplit("/", 1)[-1]
