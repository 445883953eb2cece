"""The capacity scan as a section (prefixlab/experiments/cram.py): the tiny profile end to end, and its claims as a pure
function of records."""

import json

import pytest

from prefixlab.experiments import cram as C
from prefixlab.experiments import run_reproduction


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("cram")
    report = run_reproduction("tiny", out / "repro", sections=["cram"], cache_dir=out / "cache", log=lambda *a, **k: None,
                              eta=False)
    return out / "repro", report


def test_the_tiny_section_writes_records_figure_and_claims(tiny):
    out, report = tiny
    plan = C.configs("tiny")
    records = [json.loads(line) for line in (out / "cram" / "records.jsonl").read_text().splitlines()]
    assert len(records) == len(plan.lengths) * plan.targets * len(plan.seeds)
    assert {r["model"] for r in records} == {"random"}  # tiny: no pretraining (its cost is the test's budget)
    assert all(0 <= r["n_max"] <= plan.n_cap for r in records)
    assert (out / "cram" / "records.csv").read_text().count("\n") == len(records) + 1
    assert (out / "figures" / "cram.png").stat().st_size > 10_000
    claims = json.loads((out / "cram" / "claims.json").read_text())
    assert any(c["statement"].startswith("cram (a)") for c in claims)
    construction = json.loads((out / "cram" / "construction.json").read_text())
    assert construction["precisions"]["float32"]["reach"] == [construction["n"]] * plan.targets  # exact at V = 10
    text = report.read_text()
    assert C.TITLE in text and "| random | float32 | prefix_kv |" in text


def _rec(model, precision, method, P, target, n, cap=64, floats_per_slot=128):
    return dict(model=model, precision=precision, method=method, context_len=P, target=target, seed=0, n_max=n,
                n_cap=cap, reached_cap=n >= cap, trainable_floats=floats_per_slot * P,
                bits_per_float=n * 3.3219 / (floats_per_slot * P))


def test_the_claims_follow_the_records():
    recs = [_rec(m, "float32", "soft_prompt", P, t, k * P + t) for m, k in (("random", 1), ("pretrained", 5))
            for P in (1, 2, 4) for t in range(3)]
    recs += [_rec("pretrained", "float32", "prefix", P, t, max(5 * P + t - 6, 0)) for P in (1, 2, 4) for t in range(3)]
    recs += [_rec("pretrained", "float32", "prefix_kv", P, t, 64) for P in (1, 2, 4) for t in range(3)]  # all capped
    got = {c.statement: c for c in C.claims(recs, {"vocab_size": 10}, "quick")}
    assert got["cram (a) pretrained soft_prompt f32: N_max grows about linearly in P"].verdict is True
    assert got["cram (a) pretrained prefix_kv f32: N_max grows about linearly in P"].verdict is None  # censored
    assert got["cram (c) pretrained float32: prefix ≥ soft prompt in N_max at equal P"].verdict is False  # 6 fewer
    assert got["cram (d) soft_prompt float32: the pretrained base holds more than the random model"].verdict is True
    bf16 = [dict(r, precision=p, n_max=r["n_max"] + k) for r in recs for p, k in (("bfloat16", 0), ("float64", 1))]
    cons = {"vocab_size": 10, "precisions": {"bfloat16": dict(largest_exact=20, smallest_failing=40),
                                             "float64": dict(largest_exact=20480, smallest_failing=None)}}
    gains = [c for c in C.claims(recs + bf16, cons, "quick") if c.statement.startswith("cram (b)")]
    assert gains and all(c.verdict is True for c in gains)  # + 1 token vs 4.3 -> 14.3 bits per token
    json.dumps([c.__dict__ for c in C.claims(recs + bf16, cons, "quick")])  # plain JSON types only
    flat = [_rec("random", "float32", "prefix", P, t, 3 + t) for P in (1, 2, 4) for t in range(3)]
    assert C.claims(flat, {}, "quick")[0].verdict is False  # no growth: exponent 0


def test_the_growth_fit_reports_bits_per_float():
    by_p = C.cells([_rec("random", "float32", "prefix", P, t, 10 * P) for P in (1, 2, 4) for t in range(3)])
    g = C.growth(by_p["random", "float32", "prefix"], 3.3219)
    assert g["slope"] == pytest.approx(10.0) and g["exponent"] == pytest.approx(1.0)
    assert g["slope_bits"] == pytest.approx(10 * 3.3219 / 128)


def test_the_base_keeps_its_trained_positions_and_gets_new_ones_of_their_scale():
    import jax
    import numpy as np
    from flax import nnx

    from prefixlab.config import preset
    from prefixlab.model import Transformer

    state = nnx.state(Transformer(preset("tiny"), rngs=nnx.Rngs(params=jax.random.key(0))))
    grown = C.extend_positions(state, 64, jax.random.key(1))
    old, new = np.asarray(state["pos_emb"][...]), np.asarray(grown["pos_emb"][...])
    assert old.shape == (19, 16) and new.shape == (64, 16)  # the caller's state is not changed
    np.testing.assert_array_equal(new[:19], old)
    assert 0.5 < new[19:].std() / old.std() < 2.0


def test_the_construction_loses_tokens_to_bf16_rounding_where_f32_keeps_them():
    from prefixlab.theory import reach

    assert not reach.decodes_every_token(40, "bfloat16")  # 1/V^2 below bf16's operand rounding
    assert reach.decodes_every_token(40, "float32")
