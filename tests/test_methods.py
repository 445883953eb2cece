import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prefixlab.config import preset
from prefixlab.model import Transformer
from prefixlab.methods import (Full, HardPrompt, LoRA, MethodError, Prefix, PrefixKV, RunData, SoftPrompt,
                               get_method, match_lora_to_prefix, MATCH_TOLERANCE)
from tests.helpers import tiny_model, tokens

CFG = preset("tiny", dropout=0.0)


def base_state(seed=0):
    return nnx.state(tiny_model(seed))


def run(method, trainable, base, valid_P):
    model, ctx = method.build(method.graphdef(CFG), trainable, base, RunData(valid_P), CFG)
    return model(tokens(7), ctx)


def test_lora_at_init_equals_the_base():
    base = base_state()
    lora = LoRA(rank=2, targets=("q", "k", "v", "o", "fc", "proj"))
    tr = lora.init(jax.random.key(1), CFG, base, 0)
    assert len(jax.tree.leaves(tr)) == 2 * 6 * CFG.n_layer
    # to float32 rounding, not bitwise: eager and compiled programs round differently on some CPUs (4e-8 on AVX-512)
    np.testing.assert_allclose(run(lora, tr, base, jnp.ones(0, bool)), tiny_model(0)(tokens(7)), rtol=0, atol=1e-6)


def test_lora_changes_logits_once_b_is_nonzero():
    base = base_state()
    lora = LoRA(rank=1, targets=("fc",))
    tr = jax.tree.map(lambda x: x + 0.1, lora.init(jax.random.key(1), CFG, base, 0))
    assert not np.allclose(run(lora, tr, base, jnp.ones(0, bool)), tiny_model(0)(tokens(7)))


def test_soft_prompt_of_token_embeddings_equals_hard_prompt():
    base = base_state()
    ids = jnp.array([3, 1, 4])
    soft = {"embeds_PD": base["tok_emb"][...][ids]}
    hard = {"ids_P": ids}
    valid = jnp.ones(3, bool)
    np.testing.assert_array_equal(run(SoftPrompt(), soft, base, valid), run(HardPrompt(), hard, base, valid))


@pytest.mark.parametrize("method", [SoftPrompt(init_mode="random"), Prefix(init_mode="normal"), Prefix(),
                                    PrefixKV(), PrefixKV(projection=True)])
@pytest.mark.parametrize("p", [1, 3])
def test_padded_masked_context_equals_exact_length(method, p):
    base = base_state()
    P = 5
    padded = method.init(jax.random.key(2), CFG, base, P)
    exact = method.init(jax.random.key(2), CFG, base, p)
    valid = jnp.arange(P) < p
    out_padded = run(method, padded, base, valid)
    out_exact = run(method, exact, base, jnp.ones(p, bool))
    np.testing.assert_allclose(out_padded, out_exact, atol=1e-6)
    # and the masked slots really are ignored: changing them changes nothing
    noisy = {k: perturb_slots(v, SLOT_AXIS.get(k), p) for k, v in padded.items()}
    np.testing.assert_allclose(run(method, noisy, base, valid), out_padded, atol=1e-6)


def test_prefix_sample_vocab_init_starts_as_the_soft_prompt():
    base = base_state()
    key, valid = jax.random.key(5), jnp.ones(3, bool)
    soft, prefix = SoftPrompt(init_mode="sample_vocab"), Prefix(init_mode="sample_vocab")
    out_soft = run(soft, soft.init(key, CFG, base, 3), base, valid)
    out_prefix = run(prefix, prefix.init(key, CFG, base, 3), base, valid)
    np.testing.assert_allclose(out_prefix, out_soft, atol=1e-6)
    # at the model's own scale, not N(0, 1): every layer's slot input is far smaller than a unit normal vector
    norms = jnp.linalg.norm(prefix.init(key, CFG, base, 3)["layer_inputs_LPD"], axis=-1)
    assert float(norms.max()) < 0.5 * np.sqrt(CFG.d_model)
    assert not np.allclose(out_prefix, run(prefix, Prefix(init_mode="normal").init(key, CFG, base, 3), base, valid),
                           atol=1e-3)


@pytest.mark.parametrize("init_mode", ["sample_vocab", "text"])
def test_slot_inits_from_tokens_start_as_the_same_soft_prompt(init_mode):
    # a cartridge: the prefix's layer inputs and PEFT's keys and values, computed by the base from the slots' tokens
    base = base_state()
    key, valid, text = jax.random.key(5), jnp.ones(3, bool), (4, 2)
    soft = SoftPrompt(init_mode="vocab" if init_mode == "text" else "sample_vocab", init_tokens=text)
    want = run(soft, soft.init(key, CFG, base, 3), base, valid)
    tokens_ = dict(init_tokens=text) if init_mode == "text" else {}
    for method in (Prefix(init_mode=init_mode, **tokens_), PrefixKV(init_mode=init_mode, **tokens_)):
        np.testing.assert_allclose(run(method, method.init(key, CFG, base, 3), base, valid), want, atol=1e-5)


def test_zero_inits_are_not_a_no_op():
    # zero slots still take attention mass from the content, so the outputs move away from the base's
    base, valid = base_state(), jnp.ones(2, bool)
    for method in (SoftPrompt(init_mode="zero"), Prefix(init_mode="zero"), PrefixKV(init_mode="zero")):
        trainable = method.init(jax.random.key(0), CFG, base, 2)
        assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(trainable))
        assert not np.allclose(run(method, trainable, base, valid), tiny_model(0)(tokens(7)), atol=1e-4)


def test_text_inits_need_tokens_in_the_vocabulary():
    base = base_state()
    with pytest.raises(MethodError, match="needs init_tokens"):
        Prefix(init_mode="text").init(jax.random.key(0), CFG, base, 2)
    with pytest.raises(MethodError, match="outside the vocabulary"):
        PrefixKV(init_mode="text", init_tokens=(CFG.vocab_size,)).init(jax.random.key(0), CFG, base, 2)
    with pytest.raises(MethodError, match="projection false"):
        PrefixKV(projection=True, init_mode="zero")
    text = Prefix(init_mode="text", init_tokens=(1, 23)).tag
    assert text == "prefix-text-tokens1_23" != Prefix(init_mode="text", init_tokens=(12, 3)).tag
    assert Prefix(init_tokens=(1, 23)).tag == "prefix-sample_vocab"


SLOT_AXIS = {"embeds_PD": 0, "layer_inputs_LPD": 1, "kv_PF": 0, "emb_PD": 0}


def perturb_slots(x, axis, p):
    if axis is None:
        return x
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(p, None)
    return x.at[tuple(idx)].add(10.0)


def test_prefix_lengths_count_at_true_length():
    assert Prefix().n_params(preset("paper-exp3"), 12) == 4 * 12 * 256
    assert SoftPrompt().n_params(CFG, 3) == 3 * 16
    assert PrefixKV().n_params(CFG, 2) == 2 * CFG.n_layer * 2 * CFG.d_model


def test_lora_count_and_parameter_matching_reference():
    cfg = preset("paper-exp3")
    lora, n_lora, n_prefix = match_lora_to_prefix(cfg, 12)
    assert (lora.rank, n_lora, n_prefix) == (1, 12_288, 12_288)
    assert lora.targets == ("o", "fc", "proj")
    params = nnx.state(nnx.eval_shape(lambda: lora.adapt(Transformer(cfg, rngs=nnx.Rngs(0)), jax.random.key(0))),
                       nnx.LoRAParam)
    assert sum(x.size for x in jax.tree.leaves(params)) == 12_288


@pytest.mark.parametrize("model", ["tiny", "paper-exp1", "paper-exp3"])
def test_parameter_matching_for_any_prefix_length(model):
    """For P = 1..32 the match is o,fc,proj where that is within ±10 %, else the closest count of any rank (1..64) on
    any target set; every even P matches within ±10 %."""
    import itertools
    cfg = preset(model)
    subsets = [c for k in range(1, 7) for c in itertools.combinations(("q", "k", "v", "o", "fc", "proj"), k)]
    per_rank = {t: LoRA(rank=1, targets=t).n_params(cfg, None) for t in subsets}
    assert all(LoRA(rank=3, targets=t).n_params(cfg, None) == 3 * n for t, n in per_rank.items())
    for p in range(1, 33):
        lora, n_lora, n_prefix = match_lora_to_prefix(cfg, p)
        on_reference = match_lora_to_prefix(cfg, p, targets=("o", "fc", "proj"))
        if abs(on_reference[1] / n_prefix - 1) <= MATCH_TOLERANCE:
            assert lora == on_reference[0]
        else:
            best = min(abs(r * per_rank[t] - n_prefix) for t in subsets for r in range(1, 65))
            assert abs(n_lora - n_prefix) == best, (p, lora)
        if p % 2 == 0:
            assert abs(n_lora / n_prefix - 1) <= MATCH_TOLERANCE, (p, lora, n_lora, n_prefix)
    assert match_lora_to_prefix(cfg, 1)[1] == 2 * match_lora_to_prefix(cfg, 1)[2]  # P = 1: the nearest is 2x


def test_full_counts_every_weight():
    assert Full().n_params(preset("paper-exp1"), None) == 115_776


def test_lora_scalings_and_checkpoints_from_before_them():
    """constant: the update's scale is alpha at every rank; peft alpha / r; rslora alpha / sqrt(r)."""
    from prefixlab.methods import method_from_settings, method_settings

    scales = {s: [LoRA(rank=r, alpha=2.0, scaling=s).scale for r in (1, 4)] for s in ("constant", "peft", "rslora")}
    assert scales == {"constant": [2.0, 2.0], "peft": [2.0, 0.5], "rslora": [2.0, 1.0]}
    lora = LoRA(rank=4, scaling="rslora")
    assert method_from_settings(method_settings(lora)) == lora
    old = {k: v for k, v in method_settings(lora).items() if k != "scaling"}  # what a checkpoint stored before
    assert method_from_settings(old).scaling == "peft"
    layer = lora.adapt(Transformer(CFG, rngs=nnx.Rngs(0)), jax.random.key(0)).blocks[0].mlp.layers[0]
    assert layer.lora_scale == 0.5


@pytest.mark.parametrize("bad", [dict(name="lora", targets=("x",)), dict(name="lora", rank=0),
                                 dict(name="lora", scaling="alpha"),
                                 dict(name="soft_prompt", init_mode="text"), dict(name="prefix", init_mode="vocab"),
                                 dict(name="adapter")])
def test_bad_method_settings(bad):
    name = bad.pop("name")
    with pytest.raises(MethodError):
        get_method(name, **bad)


def test_check_trains_only_takes_a_context_method():
    from tests.helpers import check_trains_only

    check_trains_only(SoftPrompt(init_mode="random"), ["embeds_PD"], 2 * CFG.d_model)
