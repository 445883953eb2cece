"""Looking inside a finished sweep: load its bases and tuned contexts, and measure what the papers plot.

    run = load_run("runs/exp1")                       # config (SweepConfig fields), cfg, bases (stacked over seeds)
    model, ctx = run.model("sort_desc", "prefix", seed=0, context_len=1)
    probs = attention_maps(model, tokens_BT, ctx)      # per layer (B, H, S, S)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from prefixlab import checkpoint as ckpt
from prefixlab import schema as S
from prefixlab.config import ModelConfig
from prefixlab.methods import RunData, get_method, method_from_settings
from prefixlab.model import Context, Transformer, abstract_model
from prefixlab.tune import RunSpec
from prefixlab.weight_spectrum import weight_spectrum  # noqa: F401 (analysis.weight_spectrum: weights vs the base)


def config_from_dict(d: dict) -> ModelConfig:
    d = dict(d)
    if d.get("mlp_hidden") is not None:
        d["mlp_hidden"] = tuple(d["mlp_hidden"])
    return ModelConfig(**d)


@dataclasses.dataclass
class Run:
    out: Path
    config: dict
    cfg: ModelConfig
    seeds: list[int]
    base_E: object  # base parameters stacked over seeds

    def base(self, seed: int):
        if seed not in self.seeds:
            raise ValueError(f"{self.out}: no base for seed {seed} (bases: seeds {self.seeds}; a base whose "
                             "pretraining diverged is not kept)")
        return jax.tree.map(lambda x: x[self.seeds.index(seed)], self.base_E)

    def base_model(self, seed: int) -> Transformer:
        graphdef, _ = abstract_model(self.cfg)
        return nnx.merge(graphdef, self.base(seed))

    def _group_dir(self, task: str, tag: str) -> Path:
        """ckpt/<task>/<tag>; a method name ("prefix") stands for its one group ("prefix-sample_vocab")."""
        d = self.out / "ckpt" / task / tag
        if d.exists() or not d.parent.is_dir():
            return d
        like = sorted(g for g in d.parent.iterdir() if g.name.startswith(tag + "-") and ckpt.exists(g))
        if len(like) != 1:
            groups = ", ".join(g.name for g in sorted(d.parent.iterdir()) if ckpt.exists(g))
            raise ValueError(f"{d}: no such group" + (f" and {len(like)} of method {tag!r}" if like else "")
                             + f"; groups of {task}: {groups}")
        return like[0]

    def model(self, task: str, tag: str, seed: int, context_len=None, lr=None):
        """(model, context) of one tuned run of group `<task>/<tag>` (or of method `tag`'s one group on `task`): the
        base seed's model with its method; of
        the runs matching context_len and lr, the one selected on validation."""
        d = self._group_dir(task, tag)
        meta = ckpt.checked(ckpt.read_meta(d), {"runs": S.list_of(S.OBJECT), "seeds": S.list_of(S.INT)},
                            d / "meta.json")
        runs = [RunSpec(**r) for r in meta["runs"]]
        pick = [i for i, r in enumerate(runs) if (context_len is None or r.context_len == context_len)
                and (lr is None or r.lr == lr)]
        if not pick:
            raise ValueError(f"{d}: no run with context_len={context_len} lr={lr}; runs: {runs}")
        si = meta["seeds"].index(seed)
        chosen = [i for i in pick if meta.get("selected", [[True] * len(runs)] * (si + 1))[si][i]]
        ri = (chosen or pick)[0]  # the learning rate selected on validation, unless `lr` names one
        method = method_from_settings(meta["method"]) if "method" in meta else _legacy_method(tag, self.config)
        P = max(r.context_len or 0 for r in runs)
        like_one = jax.eval_shape(lambda: method.init(jax.random.key(0), self.cfg, self.base(seed), P))
        E, R = len(meta["seeds"]), len(runs)
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct((E, R, *x.shape), x.dtype), like_one)
        tree = _restore_trainable(d, like, E, R)
        trainable = jax.tree.map(lambda x: x[si, ri], tree)
        p = runs[ri].context_len or 0
        run_data = RunData(jnp.arange(P) < p)
        return method.build(method.graphdef(self.cfg), trainable, self.base(seed), run_data, self.cfg)


def _restore_trainable(d: Path, like, E: int, R: int):
    """The tuned parameters of a group; the loss array's length is read from the checkpoint's own metadata."""
    with ocp.StandardCheckpointer() as c:
        shapes = c.metadata((d / "arrays").resolve())
    tree_meta = getattr(shapes, "item_metadata", shapes)
    steps = tree_meta["losses"].shape[-1]
    return ckpt.restore(d, {"trainable": like, "losses": jax.ShapeDtypeStruct((E, R, steps), jnp.float32)})["trainable"]


def _legacy_method(tag: str, config: dict):
    """Checkpoints written before groups stored their method's settings: the method from the group's tag and the
    sweep's flags (wrong for a --match-params LoRA group, whose targets are not the flags')."""
    name = tag.split("-")[0]
    if name == "lora":
        rank = int(tag.split("-")[1][1:])
        return get_method("lora", rank=rank, alpha=config["lora_alpha"], targets=tuple(config["lora_targets"]),
                          scaling=config.get("lora_scaling", "peft"))
    if name in ("soft_prompt", "prefix") and "-" in tag:
        return get_method(name, init_mode=tag.split("-", 1)[1])
    if name == "prefix":  # an untagged prefix was the reference's N(0, 1) init
        return get_method(name, init_mode="normal")
    if name == "prefix_kv":
        return get_method(name, projection=tag.endswith("-projection"))
    return get_method(name)


_MODEL_CONFIG_KINDS = {
    **dict.fromkeys(("vocab_size", "block_size", "n_layer", "n_head", "d_model"), S.INT),
    "head_dim": S.optional(S.INT), "mlp_hidden": S.optional(S.list_of(S.INT)), "attn_scale": S.optional(S.NUMBER),
    "dropout": S.NUMBER, "activation": S.STR, "dtype": S.STR, "compute_dtype": S.optional(S.STR),
    **dict.fromkeys(("ln_attn", "ln_mlp", "ln_final", "residual_attn", "residual_mlp", "causal", "pos_emb",
                     "head_bias"), S.BOOL)}


def _read_config(path: Path) -> tuple[dict, dict]:
    """(the sweep's fields, the model configuration) of a run directory's config.json, checked by key and type:
    a damaged file is a ValueError naming it and the field."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise S.SchemaError(f"{path}: missing or not JSON ({e})") from None
    S.check({"model_config": S.OBJECT}, stored, str(path))
    config = stored.get("sweep", stored)  # the SweepConfig's fields (flat in run directories before the library)
    S.check({"seeds": S.COUNT, "pretrain_steps": S.COUNT}, config, str(path))
    model = stored["model_config"]
    unknown = sorted(set(model) - set(_MODEL_CONFIG_KINDS))
    if unknown:
        raise S.SchemaError(f"{path}: model_config has unknown field(s) {unknown}")
    S.check(_MODEL_CONFIG_KINDS, model, f"{path}, model_config", optional_keys=tuple(_MODEL_CONFIG_KINDS))
    return config, model


def load_run(out) -> Run:
    """A finished (or partly finished) sweep directory: its config and its pretrained bases. Reads only. A seed
    without a base checkpoint (one whose pretraining diverged: nothing non-finite is kept) is left out of
    `Run.seeds`."""
    out = Path(out)
    config, model = _read_config(out / "config.json")
    try:
        cfg = config_from_dict(model)
    except (TypeError, ValueError) as e:
        raise S.SchemaError(f"{out / 'config.json'}, model_config: {e}") from None
    _, abstract = abstract_model(cfg)
    like = {"params": abstract, "losses": jax.ShapeDtypeStruct((config["pretrain_steps"],), jnp.float32)}
    base_of = (lambda s: 0) if config.get("shared_base") else (lambda s: s)  # one base for every seed
    seeds = [s for s in range(config["seeds"]) if ckpt.exists(out / "ckpt" / "base" / f"seed-{base_of(s)}")]
    if not seeds:
        raise ckpt.CheckpointError(f"{out / 'ckpt' / 'base'}: no base checkpoint (the sweep has not pretrained one, "
                                   "or every base diverged)")
    bases = [ckpt.restore(out / "ckpt" / "base" / f"seed-{base_of(s)}", like)["params"] for s in seeds]
    return Run(out, config, cfg, seeds, jax.tree.map(lambda *xs: jnp.stack(xs), *bases))


def attention_maps(model: Transformer, tokens_BT, ctx: Context | None = None) -> list[np.ndarray]:
    """Attention probabilities per layer, (B, H, S, S) over the stream [context slots ++ content]."""
    _, per_layer, _ = model.stream(tokens_BT, ctx, None, collect=True)
    return [np.asarray(probs) for _, _, probs in per_layer]


def attention_block_outputs(model: Transformer, tokens_BT, ctx: Context | None, position: int, layer: int = 0):
    """The attention block's output (after W_o, before the residual) at content `position`, layer `layer`:
    the quantity of the paper's Figure 3. Returns (B, D)."""
    B = tokens_BT.shape[0]
    _, per_layer, P = model.stream(tokens_BT, ctx, None, collect=True)
    _, v_BSHK, probs_BHSS = per_layer[layer]
    q = P + position
    heads_BQHK = jnp.einsum("bhqs,bshk->bqhk", probs_BHSS[:, :, q:q + 1], v_BSHK)
    return np.asarray(model.blocks[layer].attn.o(heads_BQHK.reshape(B, 1, -1))[:, 0])


class AttentionShift(NamedTuple):
    max_abs: float  # max |renormalised content attention with the prefix - attention without|
    rows: int  # query rows compared
    skipped: int  # rows whose content attention underflowed to ~0 (the prefix took all of it): nothing to renormalise


def content_attention_shift(model: Transformer, tokens_BT, ctxs: list[Context]) -> AttentionShift:
    """max over prefixes, layers 0 only (the first layer sees the same input with and without the prefix), of
    |attention over the content with the prefix columns removed and rows renormalised - attention without prefix|.
    Rows whose content mass is below 1e-30 are counted as skipped instead of turning the maximum into NaN."""
    base = attention_maps(model, tokens_BT, None)[0]
    worst, rows, skipped = 0.0, 0, 0
    for ctx in ctxs:
        P = ctx.length
        pt = attention_maps(model, tokens_BT, ctx)[0][:, :, P:, P:]
        mass = pt.sum(-1, keepdims=True)
        has_mass = mass > 1e-30
        diff = np.abs(pt / np.where(has_mass, mass, 1.0) - base).max(-1)
        ok = has_mass[..., 0]
        rows, skipped = rows + int(ok.sum()), skipped + int((~ok).sum())
        worst = max(worst, float(diff[ok].max(initial=0.0)))
    return AttentionShift(worst, rows, skipped)


def prefix_attention_spread(model: Transformer, tokens_BT, ctx: Context, query: int) -> np.ndarray:
    """The Appendix B statistic: per layer and head, how much the attention of content position `query` over the
    prefix slots (renormalised to sum 1) varies across the inputs — the 1st–99th percentile gap over inputs,
    averaged over slots. Small = every input attends to the prefix alike. Returns (L, H)."""
    P = ctx.length
    out = []
    for probs in attention_maps(model, tokens_BT, ctx):
        on_prefix_BHP = probs[:, :, P + query, :P]
        on_prefix_BHP = on_prefix_BHP / on_prefix_BHP.sum(-1, keepdims=True)
        gap_HP = np.percentile(on_prefix_BHP, 99, axis=0) - np.percentile(on_prefix_BHP, 1, axis=0)
        out.append(gap_HP.mean(axis=-1))
    return np.stack(out)
