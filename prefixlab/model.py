"""A GPT-style decoder in Flax NNX with pluggable context parameters.

The residual stream is ``[P context slots] ++ [T content tokens]``. Content tokens get learned position
embeddings 0..T-1 whatever P is, and context slots get none, so a context of length p padded to P with masked
slots computes exactly what the length-p context computes. A `Context` is a list of terms (`ContextTerm`); three
are built in, from its fields:

  embeds_PD          input-layer embeddings (soft prompt; a hard prompt is its token embeddings)
  layer_inputs_LPD   at every layer, the attention-block input at the slots is replaced (reference prefix)
  keys_LPHK/values_  at every layer, the slots' attention keys and values are given (PEFT prefix)

and a method adds its own kind as a term in `Context.terms` (hooks: the slots, a block's input, its keys and values,
each head's output before W_o). Masked (invalid) slots are never attended to. Only
content positions produce logits. The full forward pass, `prefill` and cached decoding (`decode_step`) run the same
per-block code (`Block.__call__`, one mask `_allowed`), so every term reaches all three alike.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from prefixlab.config import ACTIVATIONS, ModelConfig
from prefixlab.precision import matmul
from prefixlab.rng import keep_mask

INIT_STD = 0.02
LN_EPS = 1e-5
NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class Span:
    """The rows a block computes: `slots` context slots (static: P in a full pass, 0 when decoding) and then content
    positions from `content_start`; `start` is the first row's stream index (traced when decoding)."""

    slots: int
    start: jax.Array | int
    content_start: jax.Array | int


class ContextTerm:
    """One way a context enters the model. Each hook gets the rows being computed -- the whole stream (forward pass,
    prefill) or one new position (cached decoding), as `at` says -- so a term reaches all three alike. A subclass is a
    `jax.tree_util.register_dataclass` dataclass of arrays (no batch axis) and overrides the hooks it needs."""

    def slots(self, slots_BPD):
        """The slots' input embeddings (the full stream only: decoding finds the slots in the cache)."""
        return slots_BPD

    def layer_input(self, layer: int, x_BQD, at: Span):
        """Block `layer`'s input rows."""
        return x_BQD

    def keys_values(self, layer: int, k_BQHK, v_BQHK, at: Span):
        """Block `layer`'s attention keys and values of the rows (before they join the cache)."""
        return k_BQHK, v_BQHK

    def head_output(self, layer: int, q_BQHK, out_BQHK, at: Span):
        """Block `layer`'s per-head attention output rows (softmax-weighted values, before W_o), given the rows'
        queries: the attention weights are fixed by now, so a term here changes what a head emits, never where it
        looks (PrefixMemory-Tuning's phi(q)^T M). `at`: the query rows (the last block may compute fewer)."""
        return out_BQHK


def _over_batch(a, B: int, dtype):
    return jnp.broadcast_to(a, (B, *a.shape)).astype(dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotEmbeddings(ContextTerm):
    embeds_PD: jax.Array

    def slots(self, slots_BPD):
        return jnp.broadcast_to(self.embeds_PD.astype(slots_BPD.dtype), slots_BPD.shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotLayerInputs(ContextTerm):
    layer_inputs_LPD: jax.Array

    def layer_input(self, layer, x_BQD, at):
        if not at.slots:
            return x_BQD
        B, P, D = x_BQD.shape[0], at.slots, x_BQD.shape[-1]
        return x_BQD.at[:, :P].set(jnp.broadcast_to(self.layer_inputs_LPD[layer].astype(x_BQD.dtype), (B, P, D)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotKeysValues(ContextTerm):
    keys_LPHK: jax.Array
    values_LPHK: jax.Array

    def keys_values(self, layer, k_BQHK, v_BQHK, at):
        if not at.slots:
            return k_BQHK, v_BQHK
        B, P = k_BQHK.shape[0], at.slots
        return (k_BQHK.at[:, :P].set(_over_batch(self.keys_LPHK[layer], B, k_BQHK.dtype)),
                v_BQHK.at[:, :P].set(_over_batch(self.values_LPHK[layer], B, v_BQHK.dtype)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Context:
    """What fills the P context slots, and how the context enters the model; arrays are per run (no batch axis).
    `terms`: further kinds (ContextTerm), applied after the built-in ones."""

    valid_P: jax.Array
    embeds_PD: jax.Array | None = None
    layer_inputs_LPD: jax.Array | None = None
    keys_LPHK: jax.Array | None = None
    values_LPHK: jax.Array | None = None
    terms: tuple = ()

    @property
    def length(self) -> int:
        return self.valid_P.shape[-1]

    def all_terms(self) -> tuple[ContextTerm, ...]:
        built_in = ((SlotEmbeddings(self.embeds_PD),) if self.embeds_PD is not None else ()) + (
            (SlotLayerInputs(self.layer_inputs_LPD),) if self.layer_inputs_LPD is not None else ()) + (
            (SlotKeysValues(self.keys_LPHK, self.values_LPHK),) if self.keys_LPHK is not None else ())
        return built_in + tuple(self.terms)


class Linear(nnx.Module):
    """y = x W + b. A weight adapter (methods/adapter.py) is a subclass that keeps `kernel` and `bias`, so the
    base's parameters keep their paths and a frozen base merges into an adapted graph unchanged. The matmul runs
    in `compute_dtype` (prefixlab/precision.py); None: the parameters' dtype."""

    def __init__(self, d_in, d_out, *, rngs, dtype, std=INIT_STD, bias=True, compute_dtype=None):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out), dtype) * std)
        self.bias = nnx.Param(jnp.zeros((d_out,), dtype)) if bias else None
        self.compute_dtype = compute_dtype or jnp.dtype(dtype).name

    def share_weights(self, base: "Linear"):
        """Takes the base's kernel, bias and compute dtype (for an adapter subclass)."""
        self.kernel, self.bias, self.compute_dtype = base.kernel, base.bias, base.compute_dtype

    def project(self, x):
        return matmul(x, self.kernel[...], self.compute_dtype)

    def __call__(self, x):
        y = self.project(x)
        if self.bias is not None:
            y = y + _lead(self.bias[...], y.ndim)
        return y


class LayerNorm(nnx.Module):
    def __init__(self, d, *, dtype):
        self.scale = nnx.Param(jnp.ones((d,), dtype))
        self.bias = nnx.Param(jnp.zeros((d,), dtype))

    def __call__(self, x):
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * _lead(self.scale[...], x.ndim) + _lead(self.bias[...], x.ndim)


def _lead(v, ndim):
    """A trailing-axis vector with explicit leading unit axes (the suite runs with rank promotion = raise)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def _dropout(x, rate, key):
    if key is None or rate == 0.0:
        return x
    keep, scale = keep_mask(key, x.shape, rate)
    return jnp.where(keep, x * scale, 0.0).astype(x.dtype)


def _linear(cfg: ModelConfig, d_in, d_out, rngs, **kw) -> Linear:
    return Linear(d_in, d_out, rngs=rngs, dtype=cfg.jnp_dtype, compute_dtype=cfg.compute_dtype, **kw)


def _split_key(key, n):
    return [None] * n if key is None else list(jax.random.split(key, n))


ATTENTION_LINEARS = ("q", "k", "v", "o")


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs):
        H, K, D = cfg.n_head, cfg.hd, cfg.d_model
        self.cfg = cfg
        # q, k, v are three Linear modules so an adapter can wrap each; unadapted they run as one matmul.
        self.q = _linear(cfg, D, H * K, rngs)
        self.k = _linear(cfg, D, H * K, rngs)
        self.v = _linear(cfg, D, H * K, rngs)
        self.o = _linear(cfg, H * K, D, rngs, std=INIT_STD / math.sqrt(2 * cfg.n_layer))

    def qkv(self, h_BSD):
        B, S, _ = h_BSD.shape
        shape = (B, S, self.cfg.n_head, self.cfg.hd)
        if all(type(m) is Linear for m in (self.q, self.k, self.v)):
            # one (D, 3HK) matmul instead of three: XLA on CPU does not merge them itself (scripts/bench.py)
            w = jnp.concatenate([self.q.kernel[...], self.k.kernel[...], self.v.kernel[...]], axis=1)
            b = jnp.concatenate([self.q.bias[...], self.k.bias[...], self.v.bias[...]])
            q, k, v = jnp.split(matmul(h_BSD, w, self.q.compute_dtype) + _lead(b, 3), 3, axis=-1)
            return q.reshape(shape), k.reshape(shape), v.reshape(shape)
        return self.q(h_BSD).reshape(shape), self.k(h_BSD).reshape(shape), self.v(h_BSD).reshape(shape)

    def attend(self, q_BQHK, k_BSHK, v_BSHK, allowed_QS, drop_key, head_output=None):
        """softmax(q k^T * scale) v over the allowed keys, each head's output passed through `head_output` (the
        context terms' hook) before W_o; also returns the probabilities (B, H, Q, S)."""
        scores_BHQS = jnp.einsum("bqhk,bshk->bhqs", q_BQHK, k_BSHK) * self.cfg.scale
        scores_BHQS = jnp.where(allowed_QS[None, None], scores_BHQS, NEG_INF)
        probs_BHQS = jax.nn.softmax(scores_BHQS, axis=-1)
        out_BQHK = jnp.einsum("bhqs,bshk->bqhk", _dropout(probs_BHQS, self.cfg.dropout, drop_key), v_BSHK)
        if head_output is not None:
            out_BQHK = head_output(out_BQHK)
        B, Q = out_BQHK.shape[:2]
        return self.o(out_BQHK.reshape(B, Q, -1)), probs_BHQS


def mlp_layer_names(cfg: ModelConfig) -> list[str]:
    """fc, hidden1, ..., proj (a single layer, when there is no hidden width, is fc)."""
    n = len(cfg.hidden) + 1
    return ["fc"] if n == 1 else ["fc"] + [f"hidden{i}" for i in range(1, n - 1)] + ["proj"]


def linear_names(cfg: ModelConfig) -> list[str]:
    """A block's Linear modules, in construction order."""
    return [*ATTENTION_LINEARS, *mlp_layer_names(cfg)]


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs):
        widths = (cfg.d_model, *cfg.hidden, cfg.d_model)
        self.act = ACTIVATIONS[cfg.activation]
        n = len(widths) - 1
        self.cfg = cfg
        out_std = INIT_STD / math.sqrt(2 * cfg.n_layer)
        self.layers = nnx.List([
            _linear(cfg, widths[i], widths[i + 1], rngs, std=out_std if i == n - 1 else INIT_STD) for i in range(n)
        ])

    @property
    def names(self) -> list[str]:
        return mlp_layer_names(self.cfg)

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs):
        dt = cfg.jnp_dtype
        self.cfg = cfg
        self.ln1 = LayerNorm(cfg.d_model, dtype=dt) if cfg.ln_attn else None
        self.attn = Attention(cfg, rngs=rngs)
        self.ln2 = LayerNorm(cfg.d_model, dtype=dt) if cfg.ln_mlp else None
        self.mlp = MLP(cfg, rngs=rngs)

    def linears(self) -> dict[str, Linear]:
        """The block's Linear modules by name (q, k, v, o, fc, hidden1.., proj), in construction order."""
        return {**{n: getattr(self.attn, n) for n in ATTENTION_LINEARS}, **dict(zip(self.mlp.names, self.mlp.layers))}

    def replace_linear(self, name: str, new: Linear):
        if name in ATTENTION_LINEARS:
            setattr(self.attn, name, new)
        else:
            self.mlp.layers[self.mlp.names.index(name)] = new

    def _ln(self, ln, x):
        return x if ln is None else ln(x)

    def _finish(self, x_BQD, a_BQD, drop_keys):
        cfg = self.cfg
        a_BQD = _dropout(a_BQD, cfg.dropout, drop_keys[0])
        x_BQD = x_BQD + a_BQD if cfg.residual_attn else a_BQD
        x_BQD = jax.lax.optimization_barrier(x_BQD)  # see Transformer.stream
        m_BQD = _dropout(self.mlp(self._ln(self.ln2, x_BQD)), cfg.dropout, drop_keys[1])
        return x_BQD + m_BQD if cfg.residual_mlp else m_BQD

    def __call__(self, x_BQD, allowed_QS, at: Span | None = None, terms=(), layer: int = 0, cache_kv=None,
                 drop_key=None, q_from: int = 0):
        """One block over rows `at` of the stream (default: all of it, no context): the context `terms` change its
        input and its keys and values; with `cache_kv` (decoding) the rows' keys and values are written into the
        cache at their stream index and attention reads the cache, else it reads the rows' own. Queries (and so the
        output) only from rows q_from.. (static). Returns the output and (keys, values, attention probabilities)."""
        at = at or Span(0, 0, 0)
        for term in terms:
            x_BQD = term.layer_input(layer, x_BQD, at)
        keys = _split_key(drop_key, 3)
        q, k, v = self.attn.qkv(self._ln(self.ln1, x_BQD))
        for term in terms:
            k, v = term.keys_values(layer, k, v, at)
        if cache_kv is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k, at.start, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v, at.start, axis=1)
        q_rows, rows = q[:, q_from:], _query_rows(at, q_from)

        def head_output(out_BQHK):
            for term in terms:  # the default hook returns its input: no op is traced, a term-free model is unchanged
                out_BQHK = term.head_output(layer, q_rows, out_BQHK, rows)
            return out_BQHK

        a, probs = self.attn.attend(q_rows, k, v, allowed_QS[q_from:], keys[2], head_output)
        return self._finish(x_BQD[:, q_from:], a, keys[:2]), (k, v, probs)


def _query_rows(at: Span, q_from: int) -> Span:
    """The rows from q_from on of the rows `at`, as a Span."""
    if not q_from:
        return at
    return Span(max(at.slots - q_from, 0), at.start + q_from, at.content_start + max(q_from - at.slots, 0))


def _allowed(query_pos_Q, S, valid_P, causal):
    """(Q, S) bool: the query at stream index query_pos_Q[i] may attend to key j. Context keys only if valid; every
    query sees itself."""
    i = jnp.reshape(query_pos_Q, (-1, 1))
    j = jnp.arange(S)[None, :]
    P = valid_P.shape[-1]
    key_ok = jnp.concatenate([valid_P.astype(bool), jnp.ones((S - P,), bool)])[None, :]
    order_ok = (j <= i) if causal else jnp.ones((i.shape[0], S), bool)
    return (order_ok & key_ok) | (i == j)


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dt = cfg.jnp_dtype
        self.cfg = cfg
        self.tok_emb = nnx.Param(jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model), dt) * INIT_STD)
        self.pos_emb = (
            nnx.Param(jax.random.normal(rngs.params(), (cfg.block_size, cfg.d_model), dt) * INIT_STD)
            if cfg.pos_emb else None
        )
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layer)])
        self.ln_f = LayerNorm(cfg.d_model, dtype=dt) if cfg.ln_final else None
        self.head = _linear(cfg, cfg.d_model, cfg.vocab_size, rngs, bias=cfg.head_bias)

    # -- embeddings ---------------------------------------------------------------------------------------
    def embed(self, tokens_BT, positions_T):
        x = jnp.take(self.tok_emb[...], tokens_BT, axis=0)
        if self.pos_emb is not None:
            x = x + jnp.take(self.pos_emb[...], positions_T, axis=0)[None]
        return x

    def _logits(self, x):
        return self.head(x if self.ln_f is None else self.ln_f(x))

    # -- the blocks, for the full forward pass and cached decoding alike ------------------------------------
    def _blocks(self, x_BQD, at: Span, allowed_QS, ctx: Context | None, cache=None, drop_keys=None,
                keep_from: int = 0, collect: bool = False, barrier: bool = True):
        """Every block over rows `at`, each context term applied in it (Block.__call__); cache: per-layer (k, v)
        that the rows join (decoding). Returns the last block's output and per-layer (k, v, probabilities)."""
        terms = () if ctx is None else ctx.all_terms()
        last = self.cfg.n_layer - 1
        per_layer = []
        for l, block in enumerate(self.blocks):
            if barrier:
                # Materialise the residual stream between blocks, or XLA on CPU recomputes the earlier blocks inside
                # each backward transpose (docs/performance.md).
                x_BQD = jax.lax.optimization_barrier(x_BQD)
            x_BQD, aux = block(x_BQD, allowed_QS, at, terms, l, None if cache is None else cache[l],
                               None if drop_keys is None else drop_keys[l], keep_from if l == last else 0)
            if collect:
                per_layer.append(aux)
        return x_BQD, per_layer

    # -- full forward ---------------------------------------------------------------------------------------
    def stream(self, tokens_BT, ctx: Context | None = None, dropout_key=None, collect=False, keep_from: int = 0):
        """Runs the blocks over [context slots, content]. Returns the final stream (B, P+T-keep_from, D) at stream
        positions keep_from.. (static: the last block computes queries, attention output and MLP only there,
        since no other position can reach them), per-layer (k, v, attention probabilities) if `collect`, else an
        empty list, and P."""
        cfg = self.cfg
        B, T = tokens_BT.shape
        if T > cfg.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {cfg.block_size}")
        keys = _split_key(dropout_key, cfg.n_layer + 1)
        x = _dropout(self.embed(tokens_BT, jnp.arange(T)), cfg.dropout, keys[-1])
        P = 0 if ctx is None else ctx.length
        if P:
            slots_BPD = jnp.zeros((B, P, cfg.d_model), x.dtype)
            for term in ctx.all_terms():
                slots_BPD = term.slots(slots_BPD)
            x = jnp.concatenate([slots_BPD, x], axis=1)
        valid_P = jnp.ones((0,), bool) if ctx is None else ctx.valid_P
        allowed_SS = _allowed(jnp.arange(P + T), P + T, valid_P, cfg.causal)
        x, per_layer = self._blocks(x, Span(P, 0, 0), allowed_SS, ctx, None, keys, keep_from, collect)
        return jax.lax.optimization_barrier(x), per_layer, P

    def slot_layer_inputs(self, embeds_PD):
        """(L, P, D): the attention-block input at every layer when the P slots hold `embeds_PD` and no content
        follows. In a causal model content never reaches the slots, so these are the slot activations of the
        soft prompt `embeds_PD` whatever the input is, and slot i depends only on slots 0..i."""
        P = embeds_PD.shape[0]
        x = embeds_PD[None]
        allowed_PP = _allowed(jnp.arange(P), P, jnp.ones((P,), bool), self.cfg.causal)
        inputs = []
        for block in self.blocks:
            inputs.append(x[0])
            x, _ = block(x, allowed_PP)
        return jnp.stack(inputs)

    def __call__(self, tokens_BT, ctx: Context | None = None, dropout_key=None, logits_from: int = 0):
        """Logits (B, T - logits_from, V) at content positions logits_from.. (static). Training asks only for
        the target positions, which saves the last block's work on the input half (see lm_loss)."""
        P = 0 if ctx is None else ctx.length
        x, _, _ = self.stream(tokens_BT, ctx, dropout_key, keep_from=P + logits_from)
        return self._logits(x)

    # -- cached decoding ----------------------------------------------------------------------------------
    def prefill(self, tokens_BT, ctx: Context | None = None, cache_len: int | None = None):
        """Forward over the prompt; returns logits (B, T, V) and the per-layer kv cache, zero-padded to hold
        `cache_len` content positions (default T) so later decode steps keep fixed shapes."""
        x, per_layer, P = self.stream(tokens_BT, ctx, None, collect=True)
        pad = (cache_len or tokens_BT.shape[1]) - tokens_BT.shape[1]
        grow = lambda a: jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0)))
        cache = [(grow(k), grow(v)) for k, v, _ in per_layer]
        return self._logits(x[:, P:]), cache

    def decode_step(self, token_B, content_pos, cache, ctx: Context | None = None):
        """Logits (B, V) for one token at content position `content_pos` (traced ok); updates the cache."""
        P = 0 if ctx is None else ctx.length
        S = cache[0][0].shape[1]
        idx = P + content_pos
        x = self.embed(token_B[:, None], jnp.reshape(content_pos, (1,)))
        valid_P = jnp.ones((0,), bool) if ctx is None else ctx.valid_P
        allowed_1S = _allowed(jnp.reshape(idx, (1,)), S, valid_P, self.cfg.causal)
        x, per_layer = self._blocks(x, Span(0, idx, content_pos), allowed_1S, ctx, cache, collect=True,
                                    barrier=False)
        return self._logits(x)[:, 0], [(k, v) for k, v, _ in per_layer]


def abstract_model(cfg: ModelConfig):
    """(graphdef, abstract state) of the base model without allocating parameters."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))


def count_params(state) -> int:
    return int(sum(x.size for x in jax.tree.leaves(state)))
