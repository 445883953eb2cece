"""The reproduction's verdicts are pure functions of result records: checked here on small synthetic records."""

import dataclasses
import inspect

import pytest

from prefixlab.claim import Claim
from prefixlab.experiments import SECTIONS, budget, claims as C, exp1, exp2, exp3, extended, scaling, theory
from prefixlab.experiments.sections import registered
from prefixlab.experiments.profiles import EXT_EVAL, EXT_PRE, MIX, PROFILES
from prefixlab.sweep import SweepConfig


def rec(task, method, seed, em, **extra):
    return dict(task=task, method=method, seed=seed, exact_match=em, **extra)


def by_statement(claims):
    return {c.statement: c for c in claims}


def test_pct_mean_and_interval_clipped_to_0_100():
    assert C.pct([]) == "n/a"
    assert C.pct([0.5]) == "50.0 %"
    assert C.pct([1.0, 1.0, 0.98]).startswith("99.3 % [") and C.pct([1.0, 1.0, 0.98]).endswith(", 100.0]")
    assert C.pct([0.0, 0.0]) == "0.0 % [0.0, 0.0]"


def test_paired_gap_pairs_runs_by_task_and_seed():
    recs = [rec("a", "x", 0, 0.9), rec("a", "x", 1, 0.8), rec("a", "y", 0, 0.5), rec("a", "y", 1, 0.6),
            rec("a", "y", 2, 0.0)]  # seed 2 has no partner: left out
    m, half = C.paired_gap(recs, dict(method="x"), dict(method="y"), ["a"])
    assert m == pytest.approx(0.3) and half > 0


def test_hierarchy_holds_unless_a_gap_is_significantly_negative():
    chain = [("soft", dict(method="soft_prompt")), ("prefix", dict(method="prefix"))]
    up = [rec("t", "soft_prompt", s, 0.5) for s in range(3)] + [rec("t", "prefix", s, 0.6 + 0.01 * s) for s in range(3)]
    down = [rec("t", "soft_prompt", s, 0.9 + 0.01 * s) for s in range(3)] + [rec("t", "prefix", s, 0.1) for s in range(3)]
    assert C.hierarchy("h", up, chain, ["t"]).verdict is True
    c = C.hierarchy("h", down, chain, ["t"])
    assert c.verdict is False and c.reference == "soft ⊂ prefix" and "prefix − soft = -81.0 pp" in c.measured


def test_claim_is_frozen_and_round_trips_theory_rows():
    c = Claim("s", 1e-16, "<= 1e-10", True, "tiny float64")
    with pytest.raises(AttributeError):
        c.verdict = False
    assert c.theory_row() == {"claim": "s", "sizes": "tiny float64", "measured": 1e-16, "threshold": "<= 1e-10",
                              "holds": True}
    assert Claim.from_theory_row(c.theory_row()) == c
    assert [Claim("a", "", "", v).verdict_text for v in (True, False, None)] == [
        "reproduced", "not reproduced", "(for comparison)"]


def test_exp1_verdicts():
    good = [rec("sort_asc", "none", s, 0.95) for s in range(2)] + [
        rec("sort_desc", m, s, em) for s in range(2) for m, em in
        (("prefix", 0.0), ("soft_prompt", 0.01), ("lora", 0.9), ("full", 0.85))]
    got = by_statement(exp1.claims(good, "tiny"))
    assert list(got) == ["exp1: pretrained on sort_asc", "exp1: prefix tuned to sort_desc",
                         "exp1: soft_prompt tuned to sort_desc", "exp1: lora tuned to sort_desc",
                         "exp1: full tuned to sort_desc"]
    assert all(c.verdict for c in got.values())
    bad = [dict(r, exact_match=0.5) for r in good]  # a prefix that learns sort_desc; a base that cannot sort
    verdicts = [c.verdict for c in exp1.claims(bad, "tiny")]
    assert verdicts == [False, False, False, False, False]


def test_protocol_states_budget_stopping_rule_grid_and_steps_used():
    config = SweepConfig(model="tiny", pretrain="sort_asc", methods=("none", "prefix", "lora"), tune_steps=900,
                         tune_lr={"prefix": (5e-3,)}, pretrain_steps=100, seeds=3, eval_samples=80)
    recs = [rec("sort_desc", "lora", 0, 0.5, lr=lr, steps_used=used, selected=lr == 5e-3)
            for lr, used in ((5e-4, 900), (5e-3, 300), (5e-2, 120))]
    how = C.protocol(config, recs + [rec("sort_asc", "none", 0, 0.9, steps_used=100)])
    assert "tuned ≤ 900 steps, used 300–300" in how  # only the selected run counts, the base's steps do not
    assert "100 % validation exact match or after 4 validations without a 0.001-nat loss gain" in how
    assert "prefix 0.005; lora 0.0005/0.005/0.05" in how and "3 seeds, 80 test samples" in how
    assert "fixed steps" in C.protocol(dataclasses.replace(config, stopping=False))
    matched = dataclasses.replace(config, methods=("prefix",), match_params=True, tune_lr={"prefix": (5e-3,),
                                                                                       "lora": (1e-2,)})
    assert "lr prefix 0.005; lora 0.01;" in C.protocol(matched)  # exp 4's LoRA comes from --match-params
    assert "selected on validation" in how and "selected on validation" not in C.protocol(matched)  # one rate each
    assert "none before 60% of the budget" in how  # the transition-safe rule says so
    ref = C.protocol(matched.reference_protocol())
    assert "fixed steps; the reference's optimizer (AdamW, decay 0.01" in ref


def exp2_records(own=0.9, leak=0.0, seeds=2, inits=("normal", "sample_vocab")):
    tasks = MIX.split(",")
    recs = []
    for s in range(seeds):
        for t in tasks:
            recs.append(rec(t, "none", s, 0.2))
            recs += [rec(t, m, s, em) for m, em in (("prompt", 0.3), ("soft_prompt", own))]
            recs += [rec(t, "prefix", s, own, init=i, cross_exact_match={o: leak for o in tasks if o != t})
                     for i in inits]
    return recs


def test_exp2_verdicts():
    got = exp2.claims(exp2_records(), "tiny")
    assert len(got) == 2 * 4 + 4 + 1
    assert all(c.verdict for c in got if c.verdict is not None)
    assert [c.verdict for c in got if c.statement.startswith("exp2: mixture base")] == [None] * 4
    own = by_statement(got)["exp2: prefix P=1 (init normal) for add1: own task / the other three"]
    assert own.measured == "90.0 % [90.0, 90.0] / max 0.0 %" and own.reference == "99.6 % / ≈ 0 %"
    leaky = exp2.claims(exp2_records(leak=0.2), "tiny")  # a prefix that also does the other tasks
    assert not any(c.verdict for c in leaky if c.statement.startswith("exp2: prefix P=1"))


def test_exp2_attention_shift_claim():
    from prefixlab.analysis import AttentionShift

    assert exp2.shift_claim(AttentionShift(1.7e-6, 1000, 3), 2, 2).verdict is True
    assert exp2.shift_claim(AttentionShift(1e-3, 1000, 3), 2, 2).verdict is False


def test_exp3_verdicts():
    def records(pre, comp, new):
        recs = []
        for s in range(3):
            recs += [rec(t, "prefix", s, pre) for t in MIX.split(",")]
            recs += [rec("sort_asc+add1", "prefix", s, comp), rec("double_hist", "prefix", s, new)]
            recs += [rec(t, "soft_prompt", s, pre - 0.1) for t in ("sort_asc", "sort_desc")]
        return recs

    assert [c.verdict for c in exp3.claims(records(0.99, 0.7, 0.01), "quick")] == [True, True, True]
    assert [c.verdict for c in exp3.claims(records(0.5, 0.1, 0.3), "quick")] == [False, False, True]
    assert exp3.claims(records(0.9, 0.7, 0.0), "quick")[2].statement == "hierarchy, 4 layers, P = 10: soft prompt ⊂ prefix (on sort_asc, sort_desc)"


def test_exp4_verdict_names_the_parameter_counts():
    recs = [rec("double_hist", "prefix", s, 0.0, trainable_params=1536) for s in range(2)] + [
        rec("double_hist", "lora", s, 0.9, trainable_params=1500) for s in range(2)]
    (c,) = exp3.claims_exp4(recs, "tiny")
    assert c.verdict and c.statement == "exp4: double_hist, prefix P=12 (1,536 params) vs LoRA o,fc,proj (1,500 params)"
    (c,) = exp3.claims_exp4([dict(r, exact_match=0.5) for r in recs], "tiny")
    assert c.verdict is False
    (c,) = exp3.claims_exp4(recs, "tiny", "exp4-reference")
    assert c.statement.startswith("exp4 (the reference's protocol): double_hist") and "reference's optimizer" in c.protocol


def test_extended_verdict_counts_the_tuned_tasks():
    recs = [rec(t, "prefix", 0, 0.9) for t in EXT_PRE.split(",")] + [rec(t, "prefix", 0, 0.1) for t in EXT_EVAL.split(",")]
    (c,) = extended.claims(recs, "paper")
    assert c.verdict and c.statement.startswith("extended: P=10 prefixes, pretraining set (7 of 7 tasks) vs evaluation set (7 of 7)")
    (c,) = extended.claims(recs, "tiny")  # tiny tunes sort_asc and add1+add1 only
    assert "(1 of 7 tasks) vs evaluation set (1 of 7)" in c.statement and c.measured == "90.0 % vs 10.0 %"


def test_spread_verdict():
    claim, text = exp3.spread_claim([[0.1, 0.2], [0.1, 0.4]])
    assert claim.verdict and text == "layer 0: 0.100, layer 1: 0.300"
    assert exp3.spread_claim([[0.1, 0.6]])[0].verdict is False


def test_theory_summary_claims():
    rows = [Claim("attention rescaling", 1e-16, "<= 1e-10", True, "x"), Claim("Wang: LoRA rank 1", 0.1, ">", True, "y")]
    got = theory.claims(rows)
    assert [c.measured for c in got] == ["2 of 2 checks hold", "1 of 1 Wang checks hold"] and all(c.verdict for c in got)
    got = theory.claims(rows[:1] + [Claim("Wang: full", 1.0, "< 1e-8", False, "z")])
    assert [c.verdict for c in got] == [False, False]
    assert len(theory.claims(rows[:1])) == 1  # no Wang rows (identities only): no Wang claim
    assert "| attention rescaling | x | 1e-16 | <= 1e-10 | yes |" in theory.table(rows)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_section_has_valid_sweep_configs(profile):
    configs = {**exp1.configs(profile), **exp2.configs(profile), **exp3.configs(profile),
               **exp3.configs_exp4(profile), **extended.configs(profile)}
    assert set(configs) - {"exp4-reference"} == {"exp1", "exp2", "exp3", "exp3-soft", "exp4", "extended"}
    if "exp4-reference" in configs:  # the same sweep under the reference's protocol
        ref = configs["exp4-reference"]
        assert ref.protocol == "reference" and ref.stop_rule is None and ref.tune_optim.clip_per_tensor
        assert dataclasses.replace(ref, protocol="fair", stopping=True, lr_grid=configs["exp4"].lr_grid,
                                   tune_lr=configs["exp4"].tune_lr) == configs["exp4"]
    assert configs["exp3"].shared_base == configs["exp4"].shared_base == (profile == "paper")
    assert all(isinstance(c, SweepConfig) for c in configs.values())
    assert SweepConfig.from_json(configs["exp2"].to_json()) == configs["exp2"]
    assert configs["exp3"].seeds == PROFILES[profile]["seeds"]
    assert configs["exp4"].settings_of("lora")["scaling"] == ("peft",)  # the reference's alpha / r
    assert set(PROFILES[profile]["sections"]) <= set(SECTIONS)
    for name, config in scaling.configs(profile).items():  # every scan point is a valid sweep on its own base
        assert isinstance(config, SweepConfig) and name.endswith(f"-{config.pretrain_steps}")
    for claim, (name, config) in zip(("exp2", "exp3"), budget.configs(profile).items()):  # as scaling's, tuned longer
        pre, tune = PROFILES[profile]["budget"][claim]
        assert name == f"budget-{claim}-{tune}" and (config.pretrain_steps, config.tune_steps) == (pre, tune)
        assert config.tasks == getattr(scaling, f"{claim}_config")(profile).tasks


@pytest.mark.parametrize("name", list(registered()))
def test_every_registered_section_keeps_the_protocol(name):
    """Whatever section registers itself: run takes the reproduction alone; its sweeps, for every profile, are valid
    SweepConfigs that read back from config.json as they are."""
    section = registered()[name]
    assert section.name == name and list(inspect.signature(section.run).parameters) == ["repro"]
    for profile in PROFILES:
        configs = section.configs(profile) if section.configs else {}
        assert all(isinstance(k, str) and isinstance(c, SweepConfig) for k, c in configs.items())
        assert all(SweepConfig.from_json(c.to_json()) == c for c in configs.values())


def test_quick_sizes_are_the_decide_profiles_except_exp4_and_the_sections():
    q, d = PROFILES["quick"], PROFILES["decide"]
    assert {k for k in q if q[k] != d[k]} == {"exp4_tune", "sections"}
    assert d["sections"] == ("exp4", "scaling", "budget")
    assert exp1.configs("quick")["exp1"].lr_grid == (1.0, 10.0)  # quick drops the 0.1x rate


def exp2_point(own, base, leak=0.0):
    """Records of one exp 2 scan point: the base on every mixture task, the sort prefixes with `leak` elsewhere."""
    recs = []
    for s in range(3):
        for t in MIX.split(","):
            recs.append(rec(t, "none", s, base))
            if t in scaling.SORTS:
                recs.append(rec(t, "prefix", s, own, cross_exact_match={o: leak for o in MIX.split(",") if o != t}))
    return recs


def exp3_point(comp, new):
    return [rec(t, m, s, em) for s in range(3) for t, m, em in
            (("sort_asc+add1", "prefix", comp), ("double_hist", "prefix", new), ("sort_asc+add1", "none", 0.0))]


def test_scaling_claims_decide_at_the_longest_pretraining_and_report_every_point():
    recs = {"scaling-exp2-2000": exp2_point(0.3, 0.05), "scaling-exp2-16000": exp2_point(0.9, 0.3),
            "scaling-exp3-3000": exp3_point(0.1, 0.0), "scaling-exp3-12000": exp3_point(0.7, 0.01)}
    got = scaling.claims(recs, "quick")
    assert [c.verdict for c in got] == [True, True, True]
    assert got[0].measured.startswith("2,000: 30.0 % [30.0, 30.0] (base 5.0 % [5.0, 5.0], others ≤ 0.0 %); 16,000: 90.0")
    assert "pretraining scanned over 2,000, 16,000 steps" in got[0].protocol
    assert got[2].measured == "3,000: 10.0 % [10.0, 10.0] vs 0.0 % [0.0, 0.0]; 12,000: 70.0 % [70.0, 70.0] vs 1.0 % [1.0, 1.0]"
    # the longest point decides: a claim that held only at a shorter pretraining is not reproduced
    flipped = {"scaling-exp2-2000": exp2_point(0.9, 0.3), "scaling-exp2-16000": exp2_point(0.9, 0.3, leak=0.2),
               "scaling-exp3-3000": exp3_point(0.7, 0.0), "scaling-exp3-12000": exp3_point(0.05, 0.0)}
    assert [c.verdict for c in scaling.claims(flipped, "quick")] == [False, False, False]
    assert scaling.claims({}, "quick") == []


def test_budget_claims_use_the_scaling_criteria_on_the_longer_tuned_runs():
    recs = {"budget-exp2-16000": exp2_point(0.9, 0.1), "budget-exp3-12000": exp3_point(0.7, 0.01)}
    got = budget.claims(recs, "quick")
    assert [c.verdict for c in got] == [True, True, True]
    assert got[0].statement == "budget exp2: prefix P=1 for sort_asc on its own task, tuned ≤ 16,000 steps"
    assert got[0].measured == "90.0 % [90.0, 90.0] (others ≤ 0.0 %)"
    assert "small-exp2, pretrained 16000 steps" in got[0].protocol and "tuned ≤ 16000 steps" in got[0].protocol
    assert got[2].measured == "70.0 % [70.0, 70.0] vs 1.0 % [1.0, 1.0]" and "pretrained 6000 steps" in got[2].protocol
    # a prefix that also solves the other tasks, or a new task as easy as the composition, does not hold
    bad = {"budget-exp2-16000": exp2_point(0.9, 0.1, leak=0.2), "budget-exp3-12000": exp3_point(0.7, 0.65)}
    assert [c.verdict for c in budget.claims(bad, "quick")] == [False, False, False]
    assert budget.claims({}, "quick") == []
