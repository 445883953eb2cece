"""bfloat16 matmuls (prefixlab/precision.py): the custom backward pass, the model's f32 path, and the parity of
experiment 1's verdicts and figures between the two compute dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from prefixlab.config import ModelConfig, preset
from prefixlab.experiments.precision_parity import compare
from prefixlab.model import Transformer
from prefixlab.precision import matmul
from prefixlab.sweep import SweepConfig


def test_float32_compute_is_the_plain_matmul():
    x, w = jax.random.normal(jax.random.key(0), (3, 5, 8)), jax.random.normal(jax.random.key(1), (8, 4))
    np.testing.assert_array_equal(matmul(x, w, "float32"), x @ w)


def test_bfloat16_matmul_and_its_gradients_follow_float32():
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, (2, 37, 64)), jax.random.normal(kw, (64, 48)) / 8
    g = jax.random.normal(kg, (2, 37, 48))
    f = lambda dtype: lambda x, w: jnp.sum(matmul(x, w, dtype) * g)
    y = matmul(x, w, "bfloat16")
    assert y.dtype == jnp.float32 and y.shape == (2, 37, 48)
    np.testing.assert_allclose(y, x @ w, rtol=0, atol=0.05)  # 8 bits of mantissa, 64 products, f32 sums
    (dx, dw), (dx32, dw32) = jax.grad(f("bfloat16"), (0, 1))(x, w), jax.grad(f("float32"), (0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.float32
    for low, ref in ((dx, dx32), (dw, dw32)):
        assert float(jnp.abs(low - ref).max() / jnp.abs(ref).max()) < 0.02


def test_model_in_bfloat16_keeps_float32_parameters_and_logits():
    cfg = preset("tiny", compute_dtype="bfloat16", dropout=0.0)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    ref = Transformer(cfg.replace(compute_dtype=None), rngs=nnx.Rngs(0))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}
    tokens = jax.random.randint(jax.random.key(1), (4, 19), 0, 10)
    logits = model(tokens)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, ref(tokens), atol=0.02)


def test_compute_dtype_is_checked():
    with pytest.raises(ValueError, match="compute_dtype"):
        ModelConfig(compute_dtype="float16")
    with pytest.raises(ValueError, match="compute_dtype"):
        SweepConfig(compute_dtype="int8")


@pytest.mark.slow  # docs/performance.md: the slow run
def test_experiment1_verdicts_and_figures_agree_in_bfloat16(tmp_path):
    """Experiment 1 at tiny size, 3 seeds each (scripts/parity.py runs it at paper-exp1 size): the same verdicts,
    and every (task, method)'s bf16 mean loss and accuracies inside the f32 seeds' 95 % interval (widened by 1 pp
    for accuracies, whose seeds can tie)."""
    config = SweepConfig(model="tiny", pretrain="sort_asc", tasks=("sort_asc", "sort_desc"), tune_tasks=("sort_desc",),
                         methods=("none", "prefix", "lora"), pretrain_steps=200, tune_steps=60, seeds=3,
                         eval_samples=100, cross_eval=False, cache_dir=str(tmp_path / "cache"))
    result = compare(config, tmp_path, slack=0.01, log=lambda *a, **k: None)
    assert len(result["rows"]) == 4 * 3
    assert result["verdicts"]["float32"] == result["verdicts"]["bfloat16"]
    assert all(r["inside"] for r in result["rows"]), [r for r in result["rows"] if not r["inside"]]
