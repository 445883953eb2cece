import jax
import jax.numpy as jnp
import numpy as np

from prefixlab.prompt_search import _all_prompts, search_prompt


def toy_loss(target):
    return lambda ids: jnp.sum((ids - jnp.asarray(target)) ** 2).astype(jnp.float32)


def test_all_prompts_enumerates_base_v():
    p = np.asarray(_all_prompts(3, 2))
    assert p.shape == (9, 2) and len({tuple(r) for r in p}) == 9


def test_exhaustive_finds_the_minimum():
    ids, loss, n = search_prompt(toy_loss([7, 2, 9]), V=10, P=3, key=jax.random.key(0))
    assert ids.tolist() == [7, 2, 9] and loss == 0.0 and n == 1000


def test_greedy_coordinate_search_when_exhaustive_is_too_big():
    ids, loss, n = search_prompt(toy_loss([1, 5, 0, 3, 8]), V=10, P=5, key=jax.random.key(0))
    assert ids.tolist() == [1, 5, 0, 3, 8] and n == 2 * 5 * 10  # separable loss: one sweep suffices
