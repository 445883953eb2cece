"""Petrov et al.'s prefix identities, measured layer by layer on any prefixlab model.

For content query i, prefix slots k and content keys j, with A the attention WITHOUT the prefix and A^pt with it:
  (a) rescaling      A^pt_ij = A_ij (1 - sum_k A^pt_ik)
  (b) decomposition  t^pt_i  = sum_k A^pt_ik v_k + (1 - sum_k A^pt_ik) t_i      (per head, before W_o)
where v_k is the slot's value (W_V LN(s_k) + b_V, or the given value for a PEFT key/value prefix).

A prefix changes the inputs of every later layer, so the "without prefix" reference at layer l is computed on
the prefixed run's own content stream at layer l: the identities are per-layer statements given that input.
The walk below uses the model's own modules (embed, LN, q/k/v, attend, block finish) and is checked against
`model.stream` (`forward_err`), so what is measured is the project's forward pass.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from prefixlab.model import Context, Transformer, _allowed


@dataclasses.dataclass
class LayerIdentity:
    layer: int
    probs_pt_BHTS: jnp.ndarray  # content queries over [P slots ++ T content keys], with the prefix
    probs_ref_BHTT: jnp.ndarray  # content queries over content keys, without the prefix (same layer input)
    prefix_mass_BHT: jnp.ndarray  # sum_k A^pt_ik over the prefix slots
    rescale_err_H: np.ndarray  # max |A^pt_ij - A_ij (1 - mass_i)| per head
    output_err_H: np.ndarray  # max |t^pt_i - decomposition_i| per head
    forward_err: float  # max |probs of this walk - probs of model.stream|


def _heads_out(probs_BHQS, v_BSHK):
    return jnp.einsum("bhqs,bshk->bqhk", probs_BHQS, v_BSHK)


def attention_identities(model: Transformer, tokens_BT, ctx: Context) -> list[LayerIdentity]:
    """Attention with and without the prefix at every layer, and the errors of identities (a) and (b)."""
    cfg = model.cfg
    B, T = tokens_BT.shape
    P = ctx.length
    x = model.embed(tokens_BT, jnp.arange(T))
    slots_BPD = jnp.zeros((B, P, cfg.d_model), x.dtype)
    if ctx.embeds_PD is not None:
        slots_BPD = jnp.broadcast_to(ctx.embeds_PD.astype(x.dtype), (B, P, cfg.d_model))
    x = jnp.concatenate([slots_BPD, x], axis=1)
    allowed_pt = _allowed(jnp.arange(P + T), P + T, ctx.valid_P, cfg.causal)
    allowed_ref = _allowed(jnp.arange(T), T, jnp.ones((0,), bool), cfg.causal)
    _, model_layers, _ = model.stream(tokens_BT, ctx, collect=True)

    out = []
    for l, block in enumerate(model.blocks):
        if ctx.layer_inputs_LPD is not None:
            x = x.at[:, :P].set(jnp.broadcast_to(ctx.layer_inputs_LPD[l].astype(x.dtype), (B, P, cfg.d_model)))
        h = block._ln(block.ln1, x)
        q, k, v = block.attn.qkv(h)
        if ctx.keys_LPHK is not None:
            k = k.at[:, :P].set(jnp.broadcast_to(ctx.keys_LPHK[l], (B, *ctx.keys_LPHK[l].shape)).astype(k.dtype))
            v = v.at[:, :P].set(jnp.broadcast_to(ctx.values_LPHK[l], (B, *ctx.values_LPHK[l].shape)).astype(v.dtype))
        a, probs_pt = block.attn.attend(q, k, v, allowed_pt, None)
        # reference: the same layer's content stream alone (recomputed, not sliced, so no prefix can leak in)
        qc, kc, vc = block.attn.qkv(block._ln(block.ln1, x[:, P:]))
        _, probs_ref = block.attn.attend(qc, kc, vc, allowed_ref, None)

        pt_BHTS = probs_pt[:, :, P:, :]
        mass_BHT = pt_BHTS[..., :P].sum(-1)
        resc = jnp.abs(pt_BHTS[..., P:] - probs_ref * (1.0 - mass_BHT)[..., None]).max(axis=(0, 2, 3))
        t_pt = _heads_out(pt_BHTS, v)  # B, T, H, K
        t_ref = _heads_out(probs_ref, vc)
        mass_BTH1 = jnp.transpose(mass_BHT, (0, 2, 1))[..., None]
        decomp = _heads_out(pt_BHTS[..., :P], v[:, :P]) + (1.0 - mass_BTH1) * t_ref
        outerr = jnp.abs(t_pt - decomp).max(axis=(0, 1, 3))
        fwd = float(jnp.abs(probs_pt - model_layers[l][2]).max())
        out.append(LayerIdentity(l, pt_BHTS, probs_ref, mass_BHT, np.asarray(resc), np.asarray(outerr), fwd))
        x = block._finish(x, a, (None, None))
    return out


def identity_summary(layers: list[LayerIdentity]) -> dict:
    """Worst errors over layers and heads, plus the smallest and largest prefix attention mass seen."""
    return {
        "rescale_err": float(max(l.rescale_err_H.max() for l in layers)),
        "output_err": float(max(l.output_err_H.max() for l in layers)),
        "forward_err": float(max(l.forward_err for l in layers)),
        "prefix_mass_min": float(min(l.prefix_mass_BHT.min() for l in layers)),
        "prefix_mass_max": float(max(l.prefix_mass_BHT.max() for l in layers)),
    }


def random_context(cfg, key, P: int, form: str, scale: float = 1.0) -> Context:
    """A random prefix of length P in one of the forms 'layer_inputs', 'kv', 'embeds'."""
    import jax

    dt = cfg.jnp_dtype
    valid = jnp.ones((P,), bool)
    if form == "layer_inputs":
        return Context(valid, layer_inputs_LPD=jax.random.normal(key, (cfg.n_layer, P, cfg.d_model), dt) * scale)
    if form == "kv":
        kk, kv = jax.random.split(key)
        shape = (cfg.n_layer, P, cfg.n_head, cfg.hd)
        return Context(valid, keys_LPHK=jax.random.normal(kk, shape, dt) * scale,
                       values_LPHK=jax.random.normal(kv, shape, dt) * scale)
    if form == "embeds":
        return Context(valid, embeds_PD=jax.random.normal(key, (P, cfg.d_model), dt) * scale)
    raise ValueError(f"unknown prefix form {form!r}; valid: layer_inputs, kv, embeds")
