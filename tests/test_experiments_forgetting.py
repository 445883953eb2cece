import json

import numpy as np
import pytest

from prefixlab.experiments import forgetting as F
from prefixlab.experiments.sections import registered

TASKS = ["sort_asc", "sort_desc", "add1", "add2"]


def row(method, seed, learn, forget, intruders, rank=None, scaling="constant", sweep="forgetting", ctx=False):
    """One diagnostic row as prefixlab.forgetting makes it: the base keeps 0.3 on each other task."""
    others = [t for t in TASKS if t != "sort_desc"]
    base = {t: 0.3 for t in TASKS}
    tuned = {**{t: 0.3 - forget for t in others}, "sort_desc": learn}
    cont = {"base": {t: 0.9 for t in TASKS}, "with_context": {t: 0.9 - forget for t in TASKS},
            "without_context": {t: 0.9 for t in TASKS} if ctx else None}
    r = {"sweep": sweep, "group": f"sort_desc/{method}{rank or ''}", "task": "sort_desc", "method": method,
         "seed": seed, "context_len": 1 if ctx else None, "lr": 5e-4 if method == "full" else 5e-3, "steps_used": 500, "exact_match": learn,
         "other_tasks": others, "base": base, "with_context": tuned, "without_context": dict(base) if ctx else None,
         "retained": 0.3 - forget, "base_retained": 0.3, "forgetting": forget, "intruders": intruders,
         "delta_rank": 1, "continuation": cont, "retained_continuation": 0.9 - forget,
         "base_retained_continuation": 0.9, "forgetting_continuation": forget}
    if method == "lora":
        r.update(lora_rank=rank, lora_scaling=scaling)
    return r


def rows_where(full_intr=0, lora_intr=(3, 5, 8), lora_learn=0.7, lora_forget=(0.1, 0.15, 0.2), jitter=0.01):
    out = []
    for s in range(3):
        out.append(row("full", s, 0.99, 0.29 - jitter * s, full_intr))
        for rank, i, f in zip(F.RANKS, lora_intr, lora_forget):
            out.append(row("lora", s, lora_learn + jitter * s, f + jitter * s, i + s % 2, rank=rank))
        out.append(row("prefix", s, 0.8, 0.3, 0, ctx=True))
    return out


def verdicts(rows):
    """(i), (ii), (iii), (iv) at the default rates; (ii) and (iv) are made by exact match and by continuation
    accuracy, which the synthetic rows forget alike, so each pair agrees."""
    got = {c.statement: c.verdict for c in F.claims(rows, "quick")}
    pick = lambda *words: [v for k, v in got.items() if all(w in k for w in words)]
    (i,), ii, (iii,), iv = (pick("LoRA (at its default rate) adds"), pick("forget more"), pick("context removed"),
                            pick("learns less", "at its default rate"))
    assert len(ii) == len(iv) == 2 and ii[0] == ii[1] and iv[0] == iv[1]
    return [i, ii[0], iii, iv[0]]


def test_the_predictions_hold_where_the_rows_say_so():
    assert verdicts(rows_where()) == [True, True, True, True]


def test_intruders_under_full_fine_tuning_or_none_under_lora_fail_the_first_claim():
    assert verdicts(rows_where(full_intr=4))[0] is False
    assert verdicts(rows_where(lora_intr=(0, 0, 0)))[0] is False


def test_more_intruders_with_less_forgetting_fails_the_second_claim():
    assert verdicts(rows_where(lora_forget=(0.25, 0.15, 0.05)))[1] is False


def test_a_context_that_still_acts_when_removed_fails_the_control():
    rows = rows_where()
    rows[-1]["without_context"]["add1"] = 0.25
    assert verdicts(rows)[2] is False


def test_lora_that_learns_as_much_and_forgets_more_fails_biderman():
    assert verdicts(rows_where(lora_learn=0.99, lora_forget=(0.35, 0.35, 0.35)))[3] is False  # forgets more
    assert verdicts(rows_where(lora_learn=0.99, jitter=0.0))[3] is None  # equal learning: no side


def test_early_rows_do_not_enter_the_claims_and_the_table_and_figure_take_every_row(tmp_path):
    rows = rows_where() + [{**row("full", s, 0.5, 0.05, 9), "sweep": "forgetting-early"} for s in range(3)]
    assert verdicts(rows) == [True, True, True, True]  # the early full runs' 9 intruders are not counted
    text = F.table(rows)
    assert "| forgetting-early | full | 3 |" in text and "LoRA r16 constant" in text
    assert F.figure(rows, tmp_path / "f.png").stat().st_size > 0
    json.dumps(F.summary(rows))


def test_an_arm_at_another_rate_is_its_own_arm_with_its_own_claims():
    rows = rows_where() + [{**row("lora", s, 0.5, 0.05, 0, rank=1), "lr": 5e-4, "sweep": "forgetting-lora-lr"}
                           for s in range(3)]
    assert "LoRA r1 constant lr 0.0005" in {s["arm"] for s in F.summary(rows)}
    assert verdicts(rows) == [True, True, True, True]  # the default-rate claims do not see it
    got = {c.statement: c.verdict for c in F.claims(rows, "quick")}
    assert got["weights: LoRA (at lr 0.0005) adds intruder dimensions, full fine-tuning does not (intruders per model: "
               "top-10 singular vectors of q,k,v,o,fc,proj with max |cos| < 0.5 to the base's)"] is False  # none
    assert [v for k, v in got.items() if "learns less" in k and "at lr 0.0005" in k] == [True, True]


def test_pearson_interval():
    r, lo, hi = F.pearson([1, 2, 3, 4, 5], [2, 4, 6, 8, 10.5])
    assert r == pytest.approx(np.corrcoef([1, 2, 3, 4, 5], [2, 4, 6, 8, 10.5])[0, 1]) and lo < r < hi
    assert np.isnan(F.pearson([1, 1, 1, 1], [1, 2, 3, 4])[0])
    assert np.isnan(F.pearson([1, 2, 3, 4], [0.30000001192092896 - 0.1] * 4)[0])  # one value: no spread


def test_the_section_is_registered_with_valid_configs_for_every_profile():
    assert registered()["forgetting"].run is F.run
    for profile in ("tiny", "quick", "paper", "decide"):
        configs = F.configs(profile)
        assert set(configs) == {"forgetting", "forgetting-peft", "forgetting-rslora", "forgetting-lora-lr",
                                "forgetting-early"}
        assert configs["forgetting-lora-lr"].learning_rates("lora") == configs["forgetting"].learning_rates("full")
        assert len({c.pretrain_steps for c in configs.values()}) == 1  # one base for every sweep
        assert configs["forgetting-early"].tune_steps < configs["forgetting"].tune_steps
        assert configs["forgetting-peft"].settings_of("lora")["scaling"] == ("peft",)
