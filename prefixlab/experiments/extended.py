"""Extended tasks (Petrov et al.): P=10 prefixes on a base pretrained on seven tasks do well on those and worse on
seven new ones."""

from __future__ import annotations

from prefixlab.claim import Claim
from prefixlab.experiments.claims import em, mean, protocol
from prefixlab.experiments.profiles import EXT_EVAL, EXT_PRE, PROFILES
from prefixlab.experiments.report import records_table
from prefixlab.experiments.sections import section
from prefixlab.sweep import SweepConfig


def tuned_tasks(profile: str) -> list[str]:
    return (PROFILES[profile]["ext_tune_tasks"] or f"{EXT_PRE},{EXT_EVAL}").split(",")


def configs(profile: str) -> dict[str, SweepConfig]:
    prof = PROFILES[profile]
    model, pre, tune = prof["ext"]
    return {"extended": SweepConfig(
        model=model, pretrain=EXT_PRE, tasks=f"{EXT_PRE},{EXT_EVAL}", tune_tasks=tuple(tuned_tasks(profile)),
        methods=("none", "prefix"), prefix_lengths=(10,), tune_lr={"prefix": (5e-3,)}, pretrain_steps=pre,
        tune_steps=tune, seeds=prof["seeds"], eval_samples=prof["eval"], cross_eval=False, variant="extended")}


def claims(records, profile: str) -> list[Claim]:
    tuned = tuned_tasks(profile)
    on_pre = [t for t in EXT_PRE.split(",") if t in tuned]
    on_eval = [t for t in EXT_EVAL.split(",") if t in tuned]
    acc_pre = mean([mean(em(records, task=t, method="prefix")) for t in on_pre])
    acc_eval = mean([mean(em(records, task=t, method="prefix")) for t in on_eval])
    return [Claim(f"extended: P=10 prefixes, pretraining set ({len(on_pre)} of 7 tasks) vs evaluation set "
                  f"({len(on_eval)} of 7) (mean over tasks)", f"{100 * acc_pre:.1f} % vs {100 * acc_eval:.1f} %",
                  "high on pretrained skills, low on new ones", acc_pre > acc_eval,
                  protocol(configs(profile)["extended"], records))]


@section("extended", configs=configs)
def run(repro) -> None:
    records = repro.sweep("extended", configs(repro.profile)["extended"])
    repro.report.add(claims(records, repro.profile))
    repro.report.section("Extended tasks", repro.timing.so_far(),
                         f"Prefixes tuned on: {', '.join(tuned_tasks(repro.profile))} "
                         "(the base is scored on all 14 tasks).\n\n" + records_table(records) + "\n\n" +
                         repro.report.accuracy("extended", records, "extended tasks: P = 10 prefixes and the base"))
