"""PrefixMemory-Tuning (Prefix-Tuning+; Wang, Chen, Li et al., ICLR 2026, arXiv 2506.13674): the prefix moved out of
the attention head. Per layer and head, a query-dependent term phi(q)^T M is added to the head's output, outside the
softmax and not normalised with the content:

    out_i = softmax(q_i K^T * scale) V  +  phi(q_i)^T M,     phi(q) = elu(scale * q A) + 1  (F features)

A (K x F) and M (F x K) train; the attention weights over the content are the base's exactly (nothing enters the
softmax), so the term changes what a head emits, never where it looks.

phi: the paper's construction comes from linear attention (the prefix's softmax mass approximated by a kernel). The
stored excerpts of the paper searched here (arXiv 2506.13674 v1-v3 abstracts and summaries) do not state its feature
map, so this uses the linear-attention map of Katharopoulos et al., elu + 1, after a trainable projection A: phi(q)_f
plays the role of the unnormalised weight sim(q, a_f) of a virtual prefix key a_f, and M's row f of its value.

Parameter count and matching prefix_kv: a prefix_kv of P slots trains, per layer and head, P keys and P values (2 P K
floats); this method with F = features_per_slot * P features trains A (K F) and M (F K): 2 F K. At the default
features_per_slot = 1 the two counts are equal at every context length P, so a sweep's --prefix-lengths give both the
same budget; features of the slots beyond a run's length are masked (their gradients are zero), as slots are.
The model's stream holds no slots for it (Context of length 0): only the term acts.

At init M = 0, so the term is exactly zero and the base's outputs are unchanged (keeps_base_at_init). As LoRA's B = 0,
this leaves A without a gradient on the first step; it gets one once M moves.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from prefixlab.methods.base import MethodError, SlotMethod, slot_init
from prefixlab.methods.registry import register
from prefixlab.methods.settings import setting
from prefixlab.model import Context, ContextTerm


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class MemoryTerm(ContextTerm):
    """phi(q)^T M added to every head's output at every layer, for every query row (slots included, if another term
    adds some). proj_LHKF: A; memory_LHFK: M; valid_F: which features count (a shorter run's are masked)."""

    proj_LHKF: jax.Array
    memory_LHFK: jax.Array
    valid_F: jax.Array
    scale: float = dataclasses.field(metadata=dict(static=True), default=1.0)

    def features(self, layer, q_BQHK):
        """phi(q) (B, Q, H, F), masked features zero."""
        pre_BQHF = jnp.einsum("bqhk,hkf->bqhf", q_BQHK, self.proj_LHKF[layer].astype(q_BQHK.dtype)) * self.scale
        return (jax.nn.elu(pre_BQHF) + 1.0) * self.valid_F.astype(q_BQHK.dtype)[None, None, None]

    def head_output(self, layer, q_BQHK, out_BQHK, at):
        phi_BQHF = self.features(layer, q_BQHK)
        return out_BQHK + jnp.einsum("bqhf,hfk->bqhk", phi_BQHF, self.memory_LHFK[layer].astype(out_BQHK.dtype))


@register
@dataclasses.dataclass(frozen=True)
class PrefixMemory(SlotMethod):
    """PrefixMemory-Tuning: per layer and head a memory M and a feature map phi; phi(q)^T M is added to the head's
    output outside the softmax. Runs at the sweep's context lengths P with F = features_per_slot * P features (the
    default 1 matches prefix_kv's parameter count at the same P)."""

    name: ClassVar[str] = "prefix_memory"
    summary: ClassVar[str] = "PrefixMemory-Tuning: phi(q)^T M added to head outputs; prefix_kv's count at each P"
    keeps_base_at_init: ClassVar[bool] = True  # M = 0

    features_per_slot: int = setting(1, "phi's features per context slot (F = this x P); 1 matches prefix_kv's "
                                     "parameter count at the same P")

    def __post_init__(self):
        if self.features_per_slot < 1:
            raise MethodError(f"prefix_memory features_per_slot must be >= 1, got {self.features_per_slot}")

    def init(self, key, cfg, base_params, P):
        L, H, K, r, dt = cfg.n_layer, cfg.n_head, cfg.hd, self.features_per_slot, cfg.jnp_dtype
        # A ~ N(0, 1) as prefix_kv's keys; slot i's r columns come from fold_in(key, i), so a run's features do not
        # depend on the group's padded P
        proj_PLHKr = slot_init(key, P, lambda k: jax.random.normal(k, (L, H, K, r), dt))
        return {"proj_LHKF": jnp.moveaxis(proj_PLHKr, 0, 3).reshape(L, H, K, P * r),
                "memory_LHFK": jnp.zeros((L, H, P * r, K), dt)}

    def context(self, trainable, run_data, cfg, base_params):
        valid_F = jnp.repeat(run_data.valid_P, self.features_per_slot, axis=-1)
        term = MemoryTerm(trainable["proj_LHKF"], trainable["memory_LHFK"], valid_F, cfg.scale)
        return Context(jnp.ones((0,), bool), terms=(term,))  # no slots in the stream

    def n_params(self, cfg, p):
        return 2 * cfg.n_layer * cfg.n_head * cfg.hd * self.features_per_slot * p
