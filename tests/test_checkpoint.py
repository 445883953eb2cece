import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prefixlab import checkpoint as ckpt
from prefixlab.config import preset
from prefixlab.train import init_params, run_keys


def tree():
    _, params = init_params(preset("tiny"), run_keys([0, 1]))
    return {"params": params, "opt": jax.vmap(optax.adamw(1e-3).init)(params), "losses": jnp.arange(6.0)}


def test_restore_is_bit_identical(tmp_path):
    t = tree()
    ckpt.save(tmp_path / "c", t, {"what": "test"})
    back = ckpt.restore(tmp_path / "c", t, expect={"what": "test"})
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, back), jax.tree.map(np.asarray, t))
    assert jax.tree.structure(back) == jax.tree.structure(t)


def test_incompatible_and_corrupt_checkpoints_name_the_file(tmp_path):
    t = tree()
    ckpt.save(tmp_path / "c", t, {"model": "tiny"})
    with pytest.raises(ckpt.CheckpointError, match=r"c/meta.json: incompatible checkpoint, model is 'tiny'"):
        ckpt.restore(tmp_path / "c", t, expect={"model": "paper-exp1"})
    wrong_shape = dict(t, losses=jnp.zeros(7))
    with pytest.raises(ckpt.CheckpointError, match=r"c/arrays: cannot restore"):
        ckpt.restore(tmp_path / "c", wrong_shape)
    (tmp_path / "c" / "meta.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="meta.json: unreadable"):
        ckpt.restore(tmp_path / "c", t)


def test_a_save_interrupted_before_meta_counts_as_absent_and_replacement_is_safe(tmp_path):
    t = tree()
    d = tmp_path / "c"
    ckpt.save(d, t, {"n": 1})
    # a kill between moving the old checkpoint aside and putting the new one in place
    d.rename(tmp_path / "c.old")
    assert not ckpt.exists(d)  # readers only read: the writer's recover() puts it back
    ckpt.recover(d)
    assert ckpt.exists(d) and json.loads((d / "meta.json").read_text())["n"] == 1
    (tmp_path / "e").mkdir()  # a directory without meta.json: unfinished
    assert not ckpt.exists(tmp_path / "e")


def test_chunk_checkpoint_round_trip(tmp_path):
    t = tree()
    state = ckpt.ChunkCheckpoint(tmp_path / "p", every_s=0)
    assert state.load(t["params"], t["opt"]) is None
    losses = np.arange(12, dtype=np.float32).reshape(2, 6)
    state.save(t["params"], t["opt"], 6, losses)
    params, opt, done, back, extra = state.load(t["params"], t["opt"])
    assert done == 6 and np.array_equal(back, losses) and extra is None
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, t["params"]))
    with pytest.raises(ckpt.CheckpointError, match="stopping state"):
        state.load(t["params"], t["opt"], extra={"since": np.zeros(2, np.int32)})
    state.save(t["params"], t["opt"], 6, losses, extra={"since": np.array([3, 1], np.int32)})
    assert state.load(t["params"], t["opt"], extra={"since": np.zeros(2, np.int32)})[4]["since"].tolist() == [3, 1]
    state.clear()
    assert not (tmp_path / "p").exists()


def test_content_hash_is_stable_and_order_free():
    assert ckpt.content_hash({"a": 1, "b": [1, 2]}) == ckpt.content_hash({"b": [1, 2], "a": 1})
    assert ckpt.content_hash({"a": 1}) != ckpt.content_hash({"a": 2})
