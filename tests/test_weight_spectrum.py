import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefixlab.methods import get_method
from prefixlab.weight_spectrum import (effective_rank, intruder_cosines, intruder_count, merged_kernel, model_weights,
                                       weight_spectrum)
from tests.helpers import tiny_model


def known_spectrum(s, d_in=40, d_out=30, seed=0):
    """A (d_in, d_out) matrix with singular values s and random singular vectors."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(d_in, len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(d_out, len(s))))
    return (u * np.asarray(s, float)) @ v.T, u, v


def test_a_rank_one_update_away_from_the_base_directions_is_exactly_one_intruder():
    """The base is full rank (its 30 output singular vectors span the output space), so a new direction is an
    intruder when it is far from each of them: here an even mix of its 5 weakest (|cosine| 1/sqrt(5) = 0.45 each),
    with an input side orthogonal to the base's, scaled to rank first."""
    w, u, v = known_spectrum(np.linspace(10, 1, 30))
    out = v[:, 25:].sum(axis=1) / np.sqrt(5)
    inp = np.random.default_rng(1).normal(size=40)
    inp -= u @ (u.T @ inp)
    tuned = w + 20.0 * np.outer(inp / np.linalg.norm(inp), out)
    assert intruder_count(w, tuned) == 1
    cos = intruder_cosines(w, tuned)
    assert abs(cos[0] - 1 / np.sqrt(5)) < 0.02 and (cos[1:] > 0.9).all()
    assert effective_rank(tuned - w) == 1
    weak = w + 2.0 * np.outer(inp / np.linalg.norm(inp), out)  # the same direction below the top 10: not counted
    assert intruder_count(w, weak) == 0


def test_a_small_perturbation_creates_no_intruder():
    w, _, _ = known_spectrum(np.linspace(10, 1, 20))
    tuned = w + 1e-3 * np.random.default_rng(2).normal(size=w.shape)
    assert intruder_count(w, tuned) == 0
    assert (intruder_cosines(w, tuned) > 0.99).all()


def test_output_space_vectors_are_compared_as_the_reference_does():
    """The reference compares torch's U of the (d_out, d_in) weight: the output side. Rotating the input side
    (R W) leaves every output singular vector; mixing the output side evenly (V -> V H / sqrt(8), H a Hadamard
    matrix: |cosine| 0.35 to every base vector) makes every one of the 8 an intruder."""
    w, u, v = known_spectrum(np.arange(8.0, 0.0, -1.0), d_in=8, d_out=8)
    rot_in, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(8, 8)))
    assert intruder_count(w, rot_in @ w) == 0
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    mixed = (u * np.arange(8.0, 0.0, -1.0)) @ (v @ h / np.sqrt(8)).T
    np.testing.assert_allclose(intruder_cosines(w, mixed), 1 / np.sqrt(8), rtol=1e-9)
    assert intruder_count(w, mixed) == 8  # k = 10 reaches past the 8 vectors there are


def test_effective_rank_of_a_known_spectrum():
    w, _, _ = known_spectrum([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 of 14.25
    assert effective_rank(w) == 2  # 9 / 14.25 = 0.63 < 0.9 <= (9 + 4) / 14.25 = 0.912
    assert effective_rank(w, energy=0.6) == 1  # 9 / 14.25 = 0.63
    assert effective_rank(w, energy=0.95) == 3 and effective_rank(w, energy=0.99) == 4  # 14 / 14.25 = 0.982
    assert effective_rank(known_spectrum([1.0] * 10)[0]) == 9  # 9 of 10 equal values are exactly 90 %
    assert effective_rank(np.zeros((5, 4))) == 0
    with pytest.raises(ValueError, match="energy"):
        effective_rank(w, energy=0.0)


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="one shape"):
        intruder_count(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="k must be"):
        intruder_cosines(np.eye(3), np.eye(3), k=0)


def lora_model(rank, scaling="constant", alpha=1.0, seed=0):
    base = tiny_model(seed)
    method = get_method("lora", rank=rank, scaling=scaling, alpha=alpha)
    from flax import nnx
    graphdef = method.graphdef(base.cfg)
    frozen = nnx.state(base)
    trainable = method.init(jax.random.key(1), base.cfg, frozen, 0)
    # B = 0 at init: give every B a value so the update is nonzero
    trainable = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(2), x.shape) if x.ndim == 2 else x,
                             trainable)
    model, _ = method.build(graphdef, trainable, frozen, None, base.cfg)
    return base, model, method


def test_lora_is_merged_with_its_scale_before_the_comparison():
    base, model, method = lora_model(rank=2, scaling="peft", alpha=3.0)
    lin = model.blocks[0].attn.q
    want = np.asarray(lin.kernel[...]) + 1.5 * np.asarray(lin.lora_a[...]) @ np.asarray(lin.lora_b[...])
    np.testing.assert_allclose(merged_kernel(lin), want, atol=1e-6)
    x_BD = np.asarray(jax.random.normal(jax.random.key(5), (4, 16)))
    np.testing.assert_allclose(np.asarray(lin(jnp.asarray(x_BD))), x_BD @ merged_kernel(lin) + np.asarray(lin.bias[...]),
                               atol=1e-5)  # the merged weight computes what the LoRA module computes
    rows = weight_spectrum(base, model)
    by = {r["weight"]: r for r in rows}
    assert set(by) == set(model_weights(base)) and "head" in by
    assert by["head"]["delta_norm"] == 0 and by["head"]["intruders"] == 0  # LoRA leaves the head alone
    assert all(by[f"layer{l}.{n}"]["delta_rank"] <= 2 and by[f"layer{l}.{n}"]["delta_norm"] > 0
               for l in range(2) for n in ("q", "k", "v", "o", "fc", "proj"))
    import json
    json.dumps(rows)  # plain records


def test_a_context_method_leaves_every_weight_as_it_was():
    base = tiny_model()
    rows = weight_spectrum(base, base)
    assert all(r["intruders"] == 0 and r["delta_rank"] == 0 and r["delta_norm"] == 0 for r in rows)
