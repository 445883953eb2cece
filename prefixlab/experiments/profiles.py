"""The reproduction's sizes: per section (model, pretraining steps, tuning steps) and what each profile tunes.

`paper` follows the papers (Petrov et al. Table/appendix); `quick` uses the narrower small-exp2/small-exp3 models for a
2-core CPU, tunes exp 1 only on sort_desc (the task its claims are about), exp 2 only the prefix that starts as the soft
prompt (`exp2_inits`) and the exp 3 soft prompts only on the two sort tasks (`exp3_soft_tasks`, where soft prompt and
prefix differ) and the extended prefixes on every evaluation task but only every other pretraining task
(`ext_tune_tasks`); `tiny` only exercises the code. Tuning steps are budgets: runs stop at convergence on the
validation split (prefixlab/stopping.py). `exp4_tune` is exp 4's budget on exp 3's base (the reference trained its
LoRA 10,000 steps). `lr_grid`: the multiples of each method's default rate tried where a section pins none; quick
drops 0.1x, which the ea34b61 quick run selected in 1 of 27 settings. `scaling`: the pretraining steps the
scaling section scans for exp 2's and exp 3's open claims (prefixlab/experiments/scaling.py). `budget`: {claim:
(pretraining steps, tuning budget)} of the budget section, which tunes those claims' prefixes 8x longer
(prefixlab/experiments/budget.py). `shared_base`: one base per section for every seed, as the reference pretrained
(paper). `exp4_protocols`: exp 4 under prefixlab's protocol ("fair") and the reference's ("reference": its tuning
optimizer, fixed steps, its rates). `sections`: what a reproduction of the profile runs by default; `decide` runs exp 4
at the reference's 10,000 LoRA steps, the scaling scans and the budget section, at quick's sizes otherwise: the
profile that decides the three open claims."""

MIX = "sort_asc,sort_desc,add1,add2"
EXT_PRE = "sort_asc,sort_desc,add1,modulo,less_than,divisible,inverse_binary"
EXT_EVAL = "add1+add1,more_equal,not_divisible,double_hist,filter_count,sort_asc+add1,less_than+add1"
EXT_PRE_HALF = ",".join(EXT_PRE.split(",")[::2])  # every other pretraining task: the quick profile tunes these

ALL = None  # every task of the section
SECTIONS = ("exp1", "exp2", "exp3", "exp4", "extended", "spread", "theory")  # the default of paper and quick
PROFILES = {
    "paper": dict(seeds=3, eval=3200, exp1=("paper-exp1", 20000, 10000), exp2=("paper-exp2", 20000, 30000),
                  exp3=("paper-exp3", 40000, 20000), ext=("paper-exp3", 40000, 20000), exp4_tune=10000,
                  exp1_tune_tasks=ALL, exp2_inits=["normal", "sample_vocab"], exp3_soft_tasks=ALL, ext_tune_tasks=ALL,
                  theory=["all"], lr_grid=(0.1, 1.0, 10.0), scaling=dict(exp2=(5000, 20000, 80000), exp3=(10000, 40000)),
                  budget=dict(exp2=(80000, 240000), exp3=(40000, 160000)), sections=SECTIONS,
                  shared_base=True, exp4_protocols=("fair", "reference")),
    "quick": dict(seeds=3, eval=800, exp1=("paper-exp1", 10000, 1500), exp2=("small-exp2", 8000, 2000),
                  exp3=("small-exp3", 6000, 1500), ext=("small-exp3", 4000, 500), exp4_tune=4000,
                  exp1_tune_tasks="sort_desc", exp2_inits=["sample_vocab"], exp3_soft_tasks="sort_asc,sort_desc",
                  ext_tune_tasks=EXT_PRE_HALF + "," + EXT_EVAL, theory=["all"], lr_grid=(1.0, 10.0),
                  scaling=dict(exp2=(2000, 4000, 8000, 16000), exp3=(3000, 6000, 12000)),
                  budget=dict(exp2=(16000, 16000), exp3=(6000, 12000)), sections=SECTIONS),
    "tiny": dict(seeds=2, eval=40, exp1=("tiny", 40, 10), exp2=("tiny", 40, 10), exp3=("tiny", 40, 10),
                 ext=("tiny", 40, 10), exp4_tune=10, exp1_tune_tasks="sort_desc", exp2_inits=["normal", "sample_vocab"],
                 exp3_soft_tasks="sort_asc,sort_desc", ext_tune_tasks="sort_asc,add1+add1", theory=["identities"],
                 lr_grid=(1.0, 10.0), scaling=dict(exp2=(20, 40), exp3=(20, 40)),
                 budget=dict(exp2=(40, 80), exp3=(40, 80)), sections=SECTIONS + ("scaling", "budget"),
                 exp4_protocols=("fair", "reference")),
}
PROFILES["decide"] = dict(PROFILES["quick"], exp4_tune=10000, sections=("exp4", "scaling", "budget"))
