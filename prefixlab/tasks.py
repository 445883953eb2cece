"""Algorithmic sequence tasks of Petrov et al. (2024) as pure JAX batch generators.

A sequence is ``input(N) ++ target(N)``; the model reads ``seq[:-1]`` and is scored on the N target tokens
(the last input position predicts the first target token). Inputs are drawn on device from a PRNG key.

Two variants, as in the reference code:
  classic  -- digits 0..7, vocabulary 10: sort_asc, sort_desc, add1, add2, double_hist
  extended -- digits 1..10 (0 means "filtered out"), vocabulary 14: every task, including the x0-conditioned
              ones (x0 = the first element of the sequence the task is applied to, drawn from the task's
              x0 range; in a composition such as divisible+add1 it is drawn over all digits, as the reference does).
Inputs are sampled as the reference's loop samples them (see REPEAT_PROB).
Tasks compose with ``+`` (``sort_asc+add1`` = sort ascending, then add one). A comma list is a uniform mixture
with no task indicator in the input.

Splits: a 32-bit integer hash of an input's digits, mod 4, puts it in the test split (0), the validation split (1)
or the training split (2, 3). The hash is pure integer arithmetic, so the splits are the same in every process and
on every machine, and they are disjoint whatever the task, since the split depends on the input only. Validation
inputs serve selection and stopping; the test split is scored only in the final evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from prefixlab.rng import hash_bits, uniform_ints

SEQ_LEN = 10  # N: input length = target length
FIRST_TARGET = SEQ_LEN - 1  # model-input position of the first scored prediction (the last input digit)
# The reference's sampling loop: on every draw a fresh coin (prob REPEAT_PROB) decides whether a draw with more
# than MAX_DISTINCT distinct digits is rejected, so a share 2p/(1+p) of inputs has <= 5 distinct digits, where p
# is that share among uniform draws (classic 0.32 -> 48.8 %, extended 0.15 -> about 26 %).
REPEAT_PROB = 0.5
MAX_DISTINCT = 5
SPLIT_MOD = 4  # hash % 4: 0 test, 1 validation, 2 and 3 training (25 / 25 / 50 % of inputs)
SPLITS = {"test": (0,), "val": (1,), "train": (2, 3)}
# Candidates drawn per example for rejection sampling (fixed shape), per variant. A draw that finds no
# acceptable candidate is flagged invalid (loss-masked in training, skipped in evaluation); with these counts
# the odds are below 1e-6 per example (P(<= 5 distinct) is 0.32 for classic inputs, 0.15 for extended ones).
TRAIN_CANDIDATES = {"classic": 64, "extended": 128}
HELD_OUT_CANDIDATES = {"classic": 256, "extended": 512}  # validation and test: a quarter of the inputs each


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    vocab_size: int
    low: int  # smallest input digit
    high: int  # largest input digit


CLASSIC = Variant("classic", vocab_size=10, low=0, high=7)
EXTENDED = Variant("extended", vocab_size=14, low=1, high=10)
VARIANTS = {v.name: v for v in (CLASSIC, EXTENDED)}


def _counts(x_N):
    """count of each element of x in x (the histogram value at every position)."""
    return (x_N[:, None] == x_N[None, :]).sum(axis=1).astype(x_N.dtype)


def _x0(x_N):
    return jnp.maximum(x_N[0], 1)  # guard: a composed task can hand a 0 to a modulo-type task


@dataclasses.dataclass(frozen=True)
class Primitive:
    name: str
    fn: Callable  # (x_N, vocab_size) -> y_N
    variants: tuple[str, ...]  # variants the task exists in
    x0_range: tuple[int, int] | None = None  # range of the first input element, if the task is conditioned on it
    binary_input: bool = False


_ALL = ("classic", "extended")
_EXT = ("extended",)
PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        Primitive("sort_asc", lambda x, V: jnp.sort(x), _ALL),
        Primitive("sort_desc", lambda x, V: jnp.sort(x)[::-1], _ALL),
        Primitive("add1", lambda x, V: x + 1, _ALL),
        Primitive("add2", lambda x, V: x + 2, _ALL),
        # counts run 1..10; 10 (all digits equal) does not fit vocabulary 10 and is clipped to V-1.
        Primitive("double_hist", lambda x, V: jnp.minimum(_counts(x), V - 1), _ALL),
        Primitive("modulo", lambda x, V: x % _x0(x), _EXT, x0_range=(1, 3)),
        Primitive("less_than", lambda x, V: jnp.where(x < x[0], x, 0), _EXT, x0_range=(1, 10)),
        Primitive("more_equal", lambda x, V: jnp.where(x >= x[0], x, 0), _EXT, x0_range=(1, 10)),
        Primitive("divisible", lambda x, V: jnp.where(x % _x0(x) == 0, x, 0), _EXT, x0_range=(1, 3)),
        Primitive("not_divisible", lambda x, V: jnp.where(x % _x0(x) != 0, x, 0), _EXT, x0_range=(1, 3)),
        Primitive("filter_count", lambda x, V: jnp.where(_counts(x) >= x[0], x, 0), _EXT, x0_range=(1, 3)),
        Primitive("inverse_binary", lambda x, V: (x + 1) % 2, _EXT, binary_input=True),
    ]
}


class TaskError(ValueError):
    """An unknown or malformed task name."""


class Batch(NamedTuple):
    tokens_BT: jax.Array  # int32, model input = seq[:-1], T = 2N - 1
    targets_BT: jax.Array  # int32, seq[1:]
    mask_BT: jax.Array  # float32, 1 on the N target predictions of valid examples


def _valid_names() -> str:
    ext = [n for n, p in PRIMITIVES.items() if p.variants == _EXT]
    cls = [n for n, p in PRIMITIVES.items() if p.variants == _ALL]
    return f"classic/extended: {', '.join(cls)}; extended only: {', '.join(ext)}"


def _hash_inputs(x_N):
    """32-bit integer hash of the digits (polynomial mix + murmur3 finaliser); same on every machine."""
    h = jnp.uint32(2166136261)
    for i in range(x_N.shape[-1]):
        h = (h ^ (x_N[..., i].astype(jnp.uint32) + jnp.uint32(1))) * jnp.uint32(16777619)
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def input_split(x_N) -> jax.Array:
    """The hash residue (0..SPLIT_MOD-1) that decides the split of each input (..., N): see SPLITS."""
    return _hash_inputs(x_N) % SPLIT_MOD


def in_split(x_N, split: str) -> jax.Array:
    """True where an input (..., N) belongs to `split` ("train", "val" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    r = input_split(x_N)
    return jnp.any(jnp.stack([r == jnp.uint32(m) for m in SPLITS[split]]), axis=0)


def is_test_input(x_N) -> jax.Array:
    """True where an input (..., N) belongs to the test split."""
    return in_split(x_N, "test")


def _n_distinct(x_CN):
    """Distinct values per row: the population count of the row's set of digits as a bitmask (digits < 32).
    XLA's CPU sort is slow on many short rows, and pairwise comparison was a tenth of a paper-exp1 step."""
    bits_CN = jnp.left_shift(jnp.uint32(1), x_CN.astype(jnp.uint32))
    return jax.lax.population_count(jax.lax.reduce_or(bits_CN, axes=(x_CN.ndim - 1,))).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Task:
    """A composition of primitives (``a+b+c``) in one variant. Hashable, so it can be a static jit argument."""

    spec: str
    parts: tuple[str, ...]
    variant: Variant

    @property
    def vocab_size(self) -> int:
        return self.variant.vocab_size

    @property
    def first(self) -> Primitive:
        return PRIMITIVES[self.parts[0]]

    def apply(self, x_N):
        y = x_N
        for name in self.parts:
            y = PRIMITIVES[name].fn(y, self.vocab_size)
        return y

    def sample_input(self, key, split: str):
        """One input drawn from the task's distribution, restricted to a split (SPLITS). Returns (x_N, valid)."""
        n_cand = (TRAIN_CANDIDATES if split == "train" else HELD_OUT_CANDIDATES)[self.variant.name]
        k_digits, k_x0, k_rep = jax.random.split(key, 3)
        p = self.first
        lo, hi = (0, 1) if p.binary_input else (self.variant.low, self.variant.high)
        x_CN = uniform_ints(k_digits, (n_cand, SEQ_LEN), lo, hi)
        if p.x0_range is not None and len(self.parts) == 1:  # the reference's type check sees no composition
            x_CN = x_CN.at[:, 0].set(uniform_ints(k_x0, (n_cand,), *p.x0_range))
        # a fresh coin per draw, as the reference; hashed bits, since a threefry word per candidate is slow on CPU
        want_repeats = hash_bits(k_rep, (n_cand,)) < jnp.uint32(round(REPEAT_PROB * 2**32))
        ok_C = (~want_repeats | (_n_distinct(x_CN) <= MAX_DISTINCT)) & in_split(x_CN, split)
        idx = jnp.argmax(ok_C)
        return x_CN[idx], ok_C[idx]

    def example(self, key, split: str):
        x_N, valid = self.sample_input(key, split)
        return jnp.concatenate([x_N, self.apply(x_N)]), valid


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A uniform mixture of tasks with no task indicator; one task per example."""

    tasks: tuple[Task, ...]

    @property
    def spec(self) -> str:
        return ",".join(t.spec for t in self.tasks)

    @property
    def vocab_size(self) -> int:
        return self.tasks[0].vocab_size

    def example(self, key, split: str):
        k_task, k_ex = jax.random.split(key)
        if len(self.tasks) == 1:
            return self.tasks[0].example(k_ex, split)
        idx = jax.random.randint(k_task, (), 0, len(self.tasks))
        branches = [lambda k, t=t: t.example(k, split) for t in self.tasks]
        return jax.lax.switch(idx, branches, k_ex)

    def batch(self, key, batch_size: int, split: str = "train") -> Batch:
        """A batch of B examples from `split` ("train", "val" or "test"); a pure function of the key (jit- and
        vmap-able)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        seq, valid_B = jax.vmap(  # seq: (B, 2N)
            lambda k: self.example(k, split))(jax.random.split(key, batch_size))
        seq = seq.astype(jnp.int32)
        T = 2 * SEQ_LEN - 1
        target_pos_T = jnp.arange(T) >= FIRST_TARGET
        mask_BT = (target_pos_T[None, :] & valid_B[:, None]).astype(jnp.float32)
        return Batch(seq[:, :-1], seq[:, 1:], mask_BT)


def parse_task(spec: str, variant: str | Variant | None = None) -> Task:
    """``'sort_asc+add1'`` -> Task. ``variant=None`` picks classic unless a part exists only in extended."""
    spec = spec.strip()
    parts = tuple(p.strip() for p in spec.split("+"))
    if not spec or any(not p for p in parts):
        raise TaskError(f"malformed task name {spec!r}; valid names: {_valid_names()}")
    for p in parts:
        if p not in PRIMITIVES:
            raise TaskError(f"unknown task {p!r} in {spec!r}; valid names: {_valid_names()}")
    v = _resolve_variant([parts], variant)
    for p in parts:
        if v.name not in PRIMITIVES[p].variants:
            raise TaskError(f"task {p!r} does not exist in the {v.name} variant; valid names: {_valid_names()}")
    return Task("+".join(parts), parts, v)


def _resolve_variant(part_lists, variant) -> Variant:
    if isinstance(variant, Variant):
        return variant
    if variant is not None:
        if variant not in VARIANTS:
            raise TaskError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        return VARIANTS[variant]
    return EXTENDED if extended_only(part_lists) else CLASSIC


def extended_only(part_lists) -> list[str]:
    """The parts (of lists of primitive names) that exist only in the extended variant, sorted."""
    return sorted({p for parts in part_lists for p in parts if p in PRIMITIVES and PRIMITIVES[p].variants == _EXT})


def split_specs(specs: str) -> list[str]:
    names = [s.strip() for s in specs.split(",")]
    if not specs.strip() or any(not n for n in names):
        raise TaskError(f"malformed task list {specs!r}; valid names: {_valid_names()}")
    return names


def choose_variant(specs: list[str], variant: str | None = None) -> Variant:
    """The one variant that serves every task spec in a sweep (extended if any part needs it)."""
    return _resolve_variant([s.split("+") for s in specs], variant)


def parse_mixture(specs: str, variant: str | Variant | None = None) -> Mixture:
    """``'sort_asc,sort_desc'`` -> a uniform mixture (one task -> a mixture of one)."""
    names = split_specs(specs)
    v = choose_variant(names, variant) if not isinstance(variant, Variant) else variant
    return Mixture(tuple(parse_task(n, v) for n in names))
