"""Capacity count: one virtual token reaches more greedy completions than any single hard token can."""

import jax
from flax import nnx

from prefixlab.config import preset
from prefixlab.model import Transformer
from prefixlab.theory import capacity_count, randomize_params


def test_virtual_tokens_exceed_hard_token_bound():
    model = Transformer(preset("tiny", dropout=0.0, vocab_size=10, block_size=12), rngs=nnx.Rngs(0))
    randomize_params(model, jax.random.key(1), 0.3)
    r = capacity_count(model, jax.random.key(0), n_virtual=1024, n_new=8)
    assert 1 <= r["distinct_hard"] <= r["vocab_size"]
    assert r["distinct_virtual"] > r["vocab_size"]  # impossible for hard tokens
