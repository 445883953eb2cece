"""Theory verification: the checks of prefixlab.theory.checks, run in this process (float64 in their thread only)
and kept as <out>/theory-<part>.json in scripts/theory.py's format, so a resumed reproduction does not redo them."""

from __future__ import annotations

import json

from prefixlab.claim import Claim
from prefixlab.experiments.profiles import PROFILES
from prefixlab.experiments.sections import section


def claims(rows: list[Claim]) -> list[Claim]:
    """The report's summary claims over the theory table."""
    held = sum(bool(c.verdict) for c in rows)
    out = [Claim("theory: identities, constructions (Thm 1, 2), capacity, Wang's limitation",
                 f"{held} of {len(rows)} checks hold", "all hold", held == len(rows), "scripts/theory.py checks")]
    wang = [c for c in rows if "wang" in c.statement.lower()]
    if wang:
        out.append(Claim("Wang: a single layer has datasets no prompt can memorise", f"{sum(bool(c.verdict) for c in wang)} of "
                         f"{len(wang)} Wang checks hold", "no prompt of any length fits; LoRA/full do",
                         all(c.verdict for c in wang), "scripts/theory.py checks"))
    return out


def table(rows: list[Claim]) -> str:
    lines = ["| claim | sizes | measured | threshold | holds |", "|---|---|---|---|---|"]
    lines += [f"| {c.statement} | {c.protocol} | {c.measured if not isinstance(c.measured, float) else format(c.measured, '.3g')} "
              f"| {c.reference} | {'yes' if c.verdict else 'NO'} |" for c in rows]
    return "\n".join(lines)


@section("theory")
def run(repro) -> None:
    from prefixlab.theory import checks  # here, not at the top: prefixlab.theory.checks imports this package

    rows, walls = [], []
    for part in PROFILES[repro.profile]["theory"]:
        path = repro.out / f"theory-{part}.json"
        if path.exists():
            data = json.loads(path.read_text())
        else:
            command = f"prefixlab.experiments.theory {part}" + (" --model-dir tiny" if part == "identities" else "")
            repro.log(f"  theory {part} (in process, float64)", flush=True)
            data = checks.timed_part(part, command, model="tiny")
            path.write_text(json.dumps(data, indent=1))
        rows += [Claim.from_theory_row(r) for r in data["rows"]]
        walls.append(data["wall_s"])
    repro.report.add(claims(rows))
    repro.report.section("Theory verification", sum(walls), "Run in this process (on a CPU beside another section), "
                         "with float64 enabled in the checks' thread only.\n\n" + table(rows))
