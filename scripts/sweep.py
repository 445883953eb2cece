#!/usr/bin/env python
"""Pretrain one base per seed, then tune every method on every task and evaluate.

Example (the paper's experiment 1: a model pretrained to sort ascending, tuned to sort descending):
  python scripts/sweep.py --pretrain sort_asc --tasks sort_asc,sort_desc --model paper-exp1 --seeds 3

Writes <out>/config.json, <out>/results.jsonl (one JSON object per seed x task x method x length x rank x lr,
appended as each group finishes) and <out>/results.csv, and prints a table (mean ± std over seeds).
The same from Python: prefixlab.sweep.run_sweep(SweepConfig(...), out).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from prefixlab import tasks as T  # noqa: E402
from prefixlab.bases import DEFAULT_CACHE  # noqa: E402
from prefixlab.checkpoint import CheckpointError  # noqa: E402
from prefixlab.cli import OneLineParser, os_error_text  # noqa: E402
from prefixlab.config import PRESETS  # noqa: E402
from prefixlab.method_flags import add_method_flags, is_method_flag, old_spellings, settings_from  # noqa: E402
from prefixlab.methods import METHODS  # noqa: E402
from prefixlab.sweep import SweepConfig, SweepError, load_config, run_sweep  # noqa: E402
from prefixlab.processes import initialize, leave, peer_failure  # noqa: E402
from prefixlab.safe_paths import UnsafePath  # noqa: E402
from prefixlab.shards import shard_dir, slice_env  # noqa: E402
from prefixlab.sweep_config import COMPUTE_DTYPES, SWEEP_PRESETS, parse_shard  # noqa: E402

D = SweepConfig()  # the defaults
# flag -> SweepConfig field, where the names differ; flags not here and not OPERATIONAL map to the same name
FIELD_OF = {"no_cross_eval": "cross_eval", "no_stopping": "stopping", "no_stop_trend": "stop_trend"}
FLAG_OF = {field: flag for flag, field in FIELD_OF.items()}
OPERATIONAL = ("out", "force", "resume", "quiet", "save_every", "distributed", "preset")  # how to run, not what


def build_parser() -> argparse.ArgumentParser:
    lr_doc = ", ".join(f"{m}={cls.default_lr:g}" for m, cls in METHODS.items() if cls.training == "gradient")
    grid_doc = ",".join(f"{f:g}" for f in D.lr_grid)
    p = OneLineParser(
        prog="sweep.py", allow_abbrev=False,  # --resume compares the flags spelled out
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods:\n" + "".join(f"  {name:<12} {cls.summary}\n" for name, cls in METHODS.items()) + f"""\
default tuning learning rates: {lr_doc}, each times {grid_doc} (--lr-grid), the one selected on validation
valid tasks: {T._valid_names()}; compose with '+', e.g. sort_asc+add1
earlier spellings that still work: {", ".join(old_spellings())}""",
    )
    p.add_argument("--preset", choices=list(SWEEP_PRESETS), default=None,
                   help="start from a named set of the flags below; flags given explicitly override it. "
                        + "; ".join(f"{name}: " + ", ".join(f"{flag_of(f)} {_flag_value(v)}" for f, v in fields.items())
                                    for name, fields in SWEEP_PRESETS.items()))
    p.add_argument("--pretrain", default=D.pretrain,
                   help="pretraining task, or a comma list for a uniform mixture with no task indicator (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(D.tasks), help="comma list of tasks to tune and evaluate on (default: %(default)s)")
    p.add_argument("--tune-tasks", default=None,
                   help="tune only on these tasks, a subset of --tasks; the base and the cross evaluation still cover "
                        "every --tasks task (default: all of --tasks)")
    p.add_argument("--model", default=D.model, choices=list(PRESETS), help="model preset (default: %(default)s)")
    p.add_argument("--variant", choices=list(T.VARIANTS), default=None,
                   help="task variant (default: classic unless a task exists only in extended)")
    p.add_argument("--pretrain-steps", type=int, default=D.pretrain_steps, help="pretraining steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=D.batch_size, help="batch size, pretraining and tuning (default: %(default)s)")
    p.add_argument("--lr", type=float, default=D.lr, help="pretraining learning rate, AdamW (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=D.seeds,
                   help="number of seeds 0..n-1; one base per seed (default: %(default)s, so that the default sweep "
                        "fits in 10 min on 2 CPU cores; the papers' claims are tested with 3, scripts/reproduce.py)")
    p.add_argument("--methods", default=",".join(D.methods), help="comma list of methods (default: %(default)s)")
    p.add_argument("--prefix-lengths", default=",".join(map(str, D.prefix_lengths)), help="context lengths P for the "
                   "methods that take a context (prompt, soft_prompt, prefix, prefix_kv) (default: %(default)s)")
    p.add_argument("--match-params", action="store_true",
                   help="also run, for each prefix length, the LoRA closest to the prefix's parameter count: a rank on "
                        "the reference's o,fc,proj when within 10 %%, else the closest rank and target set; records "
                        "carry both counts and their ratio, tables mark ratios outside 10 %%")
    p.add_argument("--tune-steps", type=int, default=D.tune_steps,
                   help="tuning steps per run: the budget, which a run stops short of once it converges (see "
                        "--patience; default: %(default)s)")
    p.add_argument("--tune-lr", default=None,
                   help="learning rates to sweep: a comma list for every method ('1e-3,5e-3') or method=lr entries "
                        "('prefix=5e-4,prefix=5e-3,lora=5e-3'); unnamed methods get --lr-grid times their default")
    p.add_argument("--lr-grid", default=",".join(f"{f:g}" for f in D.lr_grid),
                   help="multiples of each method's default learning rate tuned in one program where --tune-lr names "
                        "none; tables show the rate selected on the validation split, results.jsonl every run "
                        "(default: %(default)s; 1 = the default rate only)")
    p.add_argument("--no-stopping", action="store_true",
                   help="train every run the full --tune-steps (default: a run stops once its validation exact "
                        "match is 100 %% or its validation loss has not improved for --patience validations, and "
                        "keeps its best parameters)")
    p.add_argument("--pretrain-stopping", action="store_true",
                   help="pretraining too stops at convergence on the pretraining mixture's validation split, by the "
                        "same rule, within --pretrain-steps (default: off, the fixed steps of the papers' protocols)")
    p.add_argument("--shared-base", action="store_true",
                   help="pretrain one base (seed 0) and tune every seed's runs on it, as the reference did for its "
                        "experiments 3 and 4 (default: one base per seed)")
    p.add_argument("--patience", type=int, default=D.patience,
                   help="validations (one per --chunk steps) without a validation-loss gain of --stop-tol before a "
                        "run stops (default: %(default)s)")
    p.add_argument("--stop-tol", type=float, default=D.stop_tol,
                   help="the validation-loss gain, in nats, that counts as an improvement (default: %(default)s)")
    p.add_argument("--stop-min-fraction", type=float, default=D.stop_min_fraction,
                   help="no plateau stop before this fraction of --tune-steps, so a late transition is not cut "
                        "(default: %(default)s; 0 = the first rule)")
    p.add_argument("--stop-patience-growth", type=float, default=D.stop_patience_growth,
                   help="the patience is at least this fraction of the validations done (default: %(default)s)")
    p.add_argument("--no-stop-trend", action="store_true",
                   help="allow a plateau stop while the training loss is still falling beyond its noise (default: "
                        "no such stop; each record says whether its loss was still falling at its stop)")
    p.add_argument("--protocol", choices=("fair", "reference"), default=D.protocol,
                   help="fair: --lr-grid selected on validation, runs stopped at convergence; reference: the "
                        "reference's tuning optimizer (AdamW, weight decay 0.01 on the tuned tensors, each tensor "
                        "clipped to norm 1), the full --tune-steps at one rate per method (needs --no-stopping "
                        "--lr-grid 1) (default: %(default)s)")
    p.add_argument("--val-samples", type=int, default=D.val_samples,
                   help="validation-split samples for selection and stopping (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=D.eval_samples, help="test-split samples per evaluation (default: %(default)s)")
    p.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, default=D.compute_dtype, help="the matmuls' operand "
                   "dtype; bfloat16 accumulates in f32 and keeps parameters, softmax, LayerNorm and loss in f32 (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=D.chunk, help="steps per compiled chunk; the host syncs, and tuning "
                   "runs are validated, once per chunk (default: %(default)s)")
    p.add_argument("--out", default=None, help="run directory (default: runs/sweep-<date>-<time>)")
    p.add_argument("--force", action="store_true",
                   help="write into an existing run directory, deleting its results and checkpoints first")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in --out with its own config.json: finished groups are kept, "
                        "an unfinished one continues from its last saved chunk; any other flag given must equal "
                        "the stored value")
    p.add_argument("--cache-dir", default=None,
                   help="where pretrained bases are cached and reused by any sweep with the same pretraining "
                        f"configuration (default: $PREFIXLAB_CACHE or {DEFAULT_CACHE})")
    p.add_argument("--save-every", type=float, default=60.0,
                   help="seconds between saves of the training state, for --resume (default: %(default)s)")
    p.add_argument("--no-cross-eval", action="store_true",
                   help="evaluate each tuned run on its own task only (default: also on every other --tasks task)")
    p.add_argument("--grid-shard", metavar="I/N", default=None, help="run only groups i, i+N, ... of the sweep into "
                   "<out>/shard-<i>-of-<N> (default: from SLURM_ARRAY_TASK_ID/_COUNT when set); scripts/merge.py <out> joins them")
    p.add_argument("--distributed", action="store_true",
                   help="one of several JAX processes (a launcher's, or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID): "
                        "the run axis spans every process's devices; only process 0 writes (docs/launchers.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_method_flags(p)
    return p


# flag values SweepConfig does not take as they are (it takes comma strings for its lists)
CONVERT = {"no_cross_eval": lambda v: not v, "no_stopping": lambda v: not v, "no_stop_trend": lambda v: not v}


def flag_of(field: str) -> str:
    if "." in field:  # a method setting: --<method>.<setting>
        return "--" + field
    return "--" + FLAG_OF.get(field, field).replace("_", "-")


def config_fields(given: dict) -> dict:
    """SweepConfig fields from parsed flags (only those in `given`); method settings go into `settings`."""
    fields = {}
    for flag, value in given.items():
        if flag in OPERATIONAL or is_method_flag(flag):
            continue
        fields[FIELD_OF.get(flag, flag)] = CONVERT.get(flag, lambda v: v)(value)
    settings = settings_from(given)
    if settings:
        fields["settings"] = settings
    return fields


def differing(stored: SweepConfig, given: dict) -> list[str]:
    """The SweepConfig fields (and method settings, as method.setting) of `given` whose values differ from `stored`'s."""
    base = stored.to_dict()
    differ = [f for f, v in given.items() if f != "settings" and SweepConfig.from_dict({**base, f: v}) != stored]
    for method, values in given.get("settings", {}).items():
        for name, v in values.items():
            settings = {**base["settings"], method: {**base["settings"].get(method, {}), name: v}}
            if SweepConfig.from_dict({**base, "settings": settings}) != stored:
                differ.append(f"{method}.{name}")
    return differ


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """The flags given on the command line, whatever their values (default-valued ones included)."""
    values = vars(parser.parse_args(argv))
    given = {a.dest for a in parser._actions for s in a.option_strings
             if any(arg == s or arg.startswith(s + "=") for arg in argv)}
    return {k: values[k] for k in given}


def to_config(parser, a, argv) -> SweepConfig | None:
    """The sweep to run; with --resume, the stored one, checked against every flag given."""
    try:
        if not a.resume:
            return SweepConfig(**config_fields(vars(a)))
        if a.force:
            raise SweepError("--resume and --force exclude each other")
        if a.out is None:
            raise SweepError("--resume needs --out <run directory>")
        stored = load_config(a.out)
        differ = differing(stored, config_fields(explicit_flags(parser, argv)))
        if differ:
            raise SweepError(f"cannot resume {a.out}: {', '.join(map(flag_of, differ))} differ from its "
                             "config.json; give only --out and --resume")
        return stored
    except SweepError as e:
        parser.error(cli_message(e))


def cli_message(e: SweepError) -> str:
    """The library's message with its leading field name spelled as the flag."""
    text = str(e)
    if e.field and text.startswith(e.field + " "):
        text = flag_of(e.field) + text[len(e.field):]
    return text


def _flag_value(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def parse_flags(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The flags, with --preset's values as the defaults of those not given."""
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**{FLAG_OF.get(f, f): v for f, v in SWEEP_PRESETS[preset].items()})
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parse_flags(parser, argv)
    try:
        shard = parse_shard(a.grid_shard) if a.grid_shard else slice_env()
    except SweepError as e:
        parser.error(cli_message(e))
    if shard:
        if a.out is None:
            parser.error("--grid-shard needs --out: the folder that holds every shard's run directory")
        a.grid_shard, a.out = f"{shard[0]}/{shard[1]}", str(shard_dir(a.out, *shard))
    config = to_config(parser, a, argv)
    out = Path(a.out or f"runs/sweep-{datetime.now():%Y%m%d-%H%M%S}")
    if not (math.isfinite(a.save_every) and a.save_every >= 0):
        parser.error(f"--save-every must be a finite number >= 0, got {a.save_every}")
    if a.distributed:
        try:
            initialize()  # before any other JAX call
        except (ValueError, RuntimeError) as e:
            parser.error(f"--distributed: {str(e).splitlines()[0]} (set the coordinator, e.g. by a launcher such "
                         "as SLURM, or run without --distributed)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends like Ctrl-C
    try:
        run_sweep(config, out, resume=a.resume, force=a.force, progress=not a.quiet, save_every=a.save_every)
    except (SweepError, CheckpointError, UnsafePath) as e:
        print(f"sweep.py: error: {cli_message(e) if isinstance(e, SweepError) else e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or forbidden path while running: finished groups are kept
        print(f"sweep.py: error: {os_error_text(e)}; finished groups are kept: fix that, then continue with "
              f"python scripts/sweep.py --resume --out {out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; finished groups and the training state of the last completed chunk are saved; "
              f"continue with: python scripts/sweep.py --resume --out {out}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (a peer's death under --distributed; anything else goes on)
        if peer_failure(e) is None:
            raise
        print(f"sweep.py: error: another process of this --distributed sweep stopped ({peer_failure(e)}); "
              f"finished groups are kept: start every process again with --resume --out {out}", file=sys.stderr)
        leave(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
