"""Context-based and weight-based fine-tuning methods, each a small pluggable piece.

A method knows its trainable parameters' init, how they enter the forward pass (`build` returns the model and
the `Context`), and its trainable-parameter count at a run's true context length. Context methods keep the
base in `frozen` (shared by all runs, never updated, so it stays bit-identical); `full` trains every weight.
Run-varying context lengths share one program: parameters are allocated at the group's longest length P and
`run_data.valid_P` masks the unused slots (their gradients are zero and they are never attended to).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ModelConfig
from prefixlab.model import Context, LoRAParam, Transformer
from prefixlab.train import abstract_model

LORA_MODULES = ("q", "k", "v", "o", "fc", "proj")
SOFT_PROMPT_INITS = ("random", "vocab", "sample_vocab")
PREFIX_INITS = ("normal", "sample_vocab")


# Context slots carry no position, so nothing in the model bounds P; this bound keeps a padded group's attention
# cost sane and is well above the papers' longest prefixes (P = 12).
MAX_CONTEXT_LEN = 64


class MethodError(ValueError):
    """A method or method setting that does not exist or does not fit the model."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RunData:
    """Per-run constants that are not trained: the context mask (valid_P[i] = i < context length)."""

    valid_P: jax.Array


def slot_init(key, P: int, fn):
    """Slot i is initialised from fold_in(key, i): a run's first p slots do not depend on the padded P."""
    return jax.vmap(lambda i: fn(jax.random.fold_in(key, i)))(jnp.arange(P))


@dataclasses.dataclass(frozen=True)
class Method:
    """Base: the model is the frozen base, no context. Subclasses override what they change."""

    name: str = "none"
    uses_context: bool = False
    trains_weights: bool = False
    default_lr: float = 0.0

    def graphdef(self, cfg: ModelConfig):
        return abstract_model(cfg)[0]

    def init(self, key, cfg: ModelConfig, base_params, P: int):
        return {}

    def context(self, trainable, run_data: RunData, cfg: ModelConfig, base_params) -> Context | None:
        return None

    def build(self, graphdef, trainable, frozen, run_data: RunData, cfg: ModelConfig):
        return nnx.merge(graphdef, frozen), self.context(trainable, run_data, cfg, frozen)

    def n_params(self, cfg: ModelConfig, p: int | None) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class SoftPrompt(Method):
    """P learned input embeddings at the input layer only (prompt tuning)."""

    name: str = "soft_prompt"
    uses_context: bool = True
    default_lr: float = 5e-3
    init_mode: str = "sample_vocab"  # PEFT: RANDOM, TEXT (= vocab), SAMPLE_VOCAB
    init_tokens: tuple[int, ...] = ()  # for init_mode "vocab"

    def __post_init__(self):
        if self.init_mode not in SOFT_PROMPT_INITS:
            raise MethodError(f"soft prompt init must be one of {SOFT_PROMPT_INITS}, got {self.init_mode!r}")

    def init(self, key, cfg, base_params, P):
        emb_VD = base_params["tok_emb"][...]
        if self.init_mode == "random":
            return {"embeds_PD": slot_init(key, P, lambda k: jax.random.normal(k, (cfg.d_model,), emb_VD.dtype))}
        if self.init_mode == "vocab":
            if not self.init_tokens:
                raise MethodError("soft prompt init 'vocab' needs init_tokens")
            ids = jnp.array([self.init_tokens[i % len(self.init_tokens)] for i in range(P)])
            return {"embeds_PD": emb_VD[ids]}
        ids = slot_init(key, P, lambda k: jax.random.randint(k, (), 0, cfg.vocab_size))
        return {"embeds_PD": emb_VD[ids]}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, embeds_PD=trainable["embeds_PD"])

    def n_params(self, cfg, p):
        return p * cfg.d_model


@dataclasses.dataclass(frozen=True)
class Prefix(Method):
    """Reference prefix-tuning: at every layer the attention-block input at the P slots is replaced by learned
    vectors, so the frozen weights compute their keys and values.
    init_mode "normal": N(0, 1) as in the reference. "sample_vocab": what the base computes at the slots when they
    hold the embeddings of sampled tokens, so the prefix starts as exactly the soft prompt with the same key
    (in a causal model) -- at the scale of the model's own activations, which matters without a LayerNorm before
    attention (paper-exp2), where N(0, 1) vectors are ~50x the residual stream and can leave a run stuck."""

    name: str = "prefix"
    uses_context: bool = True
    default_lr: float = 5e-4
    init_mode: str = "normal"

    def __post_init__(self):
        if self.init_mode not in PREFIX_INITS:
            raise MethodError(f"prefix init must be one of {PREFIX_INITS}, got {self.init_mode!r}")

    def init(self, key, cfg, base_params, P):
        if self.init_mode == "sample_vocab":
            embeds_PD = SoftPrompt(init_mode="sample_vocab").init(key, cfg, base_params, P)["embeds_PD"]
            model = nnx.merge(self.graphdef(cfg), base_params)
            return {"layer_inputs_LPD": model.slot_layer_inputs(embeds_PD)}
        draw = lambda k: jax.random.normal(k, (cfg.n_layer, cfg.d_model), cfg.jnp_dtype)
        return {"layer_inputs_LPD": jnp.swapaxes(slot_init(key, P, draw), 0, 1)}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, layer_inputs_LPD=trainable["layer_inputs_LPD"])

    def n_params(self, cfg, p):
        return cfg.n_layer * p * cfg.d_model


@dataclasses.dataclass(frozen=True)
class PrefixKV(Method):
    """PEFT prefix-tuning: learned keys and values for P virtual tokens at every layer, optionally through a
    reparameterisation MLP (PEFT `prefix_projection`: embedding -> Linear -> tanh -> Linear)."""

    name: str = "prefix_kv"
    uses_context: bool = True
    default_lr: float = 5e-3
    projection: bool = False
    projection_hidden: int = 128

    def _kv_size(self, cfg):
        return cfg.n_layer * 2 * cfg.n_head * cfg.hd

    def init(self, key, cfg, base_params, P):
        dt, F = cfg.jnp_dtype, self._kv_size(cfg)
        if not self.projection:
            return {"kv_PF": slot_init(key, P, lambda k: jax.random.normal(k, (F,), dt))}
        k_emb, k1, k2 = jax.random.split(key, 3)
        D, Hd = cfg.d_model, self.projection_hidden
        lim1, lim2 = 1 / math.sqrt(D), 1 / math.sqrt(Hd)  # PyTorch Linear default init bounds
        return {
            "emb_PD": slot_init(k_emb, P, lambda k: jax.random.normal(k, (D,), dt)),
            "w1": jax.random.uniform(k1, (D, Hd), dt, -lim1, lim1), "b1": jnp.zeros((Hd,), dt),
            "w2": jax.random.uniform(k2, (Hd, F), dt, -lim2, lim2), "b2": jnp.zeros((F,), dt),
        }

    def keys_values(self, trainable, cfg):
        """(keys_LPHK, values_LPHK): what a checkpoint of this method stores (projection applied)."""
        if self.projection:
            t = trainable
            kv_PF = jnp.tanh(t["emb_PD"] @ t["w1"] + t["b1"][None]) @ t["w2"] + t["b2"][None]
        else:
            kv_PF = trainable["kv_PF"]
        P = kv_PF.shape[0]
        kv = kv_PF.reshape(P, cfg.n_layer, 2, cfg.n_head, cfg.hd).transpose(2, 1, 0, 3, 4)
        return kv[0], kv[1]

    def context(self, trainable, run_data, cfg, base_params):
        keys, values = self.keys_values(trainable, cfg)
        return Context(run_data.valid_P, keys_LPHK=keys, values_LPHK=values)

    def n_params(self, cfg, p):
        F = self._kv_size(cfg)
        if not self.projection:
            return p * F
        D, Hd = cfg.d_model, self.projection_hidden
        return p * D + D * Hd + Hd + Hd * F + F


@dataclasses.dataclass(frozen=True)
class HardPrompt(Method):
    """P hard tokens prepended (their token embeddings fill the slots). Found by search, not gradients:
    see `prefixlab.prompt_search`. `trainable` holds the token ids."""

    name: str = "prompt"
    uses_context: bool = True

    def init(self, key, cfg, base_params, P):
        return {"ids_P": slot_init(key, P, lambda k: jax.random.randint(k, (), 0, cfg.vocab_size))}

    def context(self, trainable, run_data, cfg, base_params):
        return Context(run_data.valid_P, embeds_PD=base_params["tok_emb"][...][trainable["ids_P"]])

    def n_params(self, cfg, p):
        return p  # discrete tokens, not continuous parameters


@dataclasses.dataclass(frozen=True)
class LoRA(Method):
    """Rank-r update (alpha / r) A B on the target Linear modules of every layer; B = 0 at init (PEFT)."""

    name: str = "lora"
    trains_weights: bool = True
    default_lr: float = 5e-3
    rank: int = 1
    alpha: float = 1.0
    targets: tuple[str, ...] = ("o", "fc", "proj")

    def __post_init__(self):
        bad = [t for t in self.targets if t not in LORA_MODULES]
        if bad or not self.targets:
            raise MethodError(f"unknown LoRA target(s) {bad or '(none)'}; valid: {', '.join(LORA_MODULES)}")
        if self.rank < 1:
            raise MethodError(f"LoRA rank must be >= 1, got {self.rank}")

    @property
    def spec(self):
        return (self.rank, self.alpha, self.targets)

    def graphdef(self, cfg):
        return abstract_model(cfg, self.spec)[0]

    def init(self, key, cfg, base_params, P):
        model = Transformer(cfg, rngs=nnx.Rngs(params=key), lora=self.spec)
        return nnx.state(model, LoRAParam)

    def build(self, graphdef, trainable, frozen, run_data, cfg):
        return nnx.merge(graphdef, trainable, frozen), None

    def n_params(self, cfg, p):
        D, H, K = cfg.d_model, cfg.n_head, cfg.hd
        widths = (D, *cfg.hidden, D)
        dims = {"q": (D, H * K), "k": (D, H * K), "v": (D, H * K), "o": (H * K, D),
                "fc": (widths[0], widths[1]), "proj": (widths[-2], widths[-1])}
        return cfg.n_layer * sum(self.rank * sum(dims[t]) for t in self.targets)


@dataclasses.dataclass(frozen=True)
class Full(Method):
    """Full fine-tuning: every weight trains (`frozen` is unused)."""

    name: str = "full"
    trains_weights: bool = True
    default_lr: float = 5e-4

    def init(self, key, cfg, base_params, P):
        return base_params

    def build(self, graphdef, trainable, frozen, run_data, cfg):
        return nnx.merge(graphdef, trainable), None

    def n_params(self, cfg, p):
        return int(sum(x.size for x in jax.tree.leaves(abstract_model(cfg)[1])))


METHODS = {"none": Method, "prompt": HardPrompt, "soft_prompt": SoftPrompt, "prefix": Prefix,
           "prefix_kv": PrefixKV, "lora": LoRA, "full": Full}


def get_method(name: str, **settings) -> Method:
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name](**settings)


# fields every method has; the rest are a method's settings
_CONSTANT_FIELDS = ("uses_context", "trains_weights", "default_lr")


def method_settings(method: Method) -> dict:
    """{"name": ..., setting: value}: what a checkpoint stores to rebuild `method` (JSON-ready)."""
    d = {k: v for k, v in dataclasses.asdict(method).items() if k not in _CONSTANT_FIELDS}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def method_from_settings(settings: dict) -> Method:
    """The method that `method_settings` described."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return get_method(d.pop("name"), **d)


def match_lora_to_prefix(cfg: ModelConfig, prefix_len: int, targets=("o", "fc", "proj")) -> tuple[LoRA, int, int]:
    """The LoRA rank on `targets` whose trainable-parameter count is closest to a `prefix` of length
    `prefix_len` (ties to the smaller rank). Returns (LoRA, lora params, prefix params).
    Reference: P = 12 on paper-exp3 = rank-1 LoRA on o, fc, proj = 12,288 parameters."""
    target = Prefix().n_params(cfg, prefix_len)
    per_rank = LoRA(rank=1, targets=tuple(targets)).n_params(cfg, None)
    rank = max(1, round(target / per_rank))
    lora = LoRA(rank=rank, targets=tuple(targets))
    return lora, lora.n_params(cfg, None), target

