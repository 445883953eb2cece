"""Claim: one checked statement, for the reproduction report (prefixlab/experiments) and the theory table
(prefixlab/theory) alike; it sits below both, so neither imports the other for it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Claim:
    """statement: what is claimed; measured: what we found (text, or a number for a theory check); reference: the
    paper's value or the threshold; verdict: True holds, False fails, None shown for comparison only; protocol:
    how it was measured (the sweep, or a theory check's sizes)."""

    statement: str
    measured: str | float | int
    reference: str
    verdict: bool | None
    protocol: str = ""

    @property
    def verdict_text(self) -> str:
        return {True: "reproduced", False: "not reproduced", None: "(for comparison)"}[self.verdict]

    def theory_row(self) -> dict:
        """The row of scripts/theory.py's JSON table."""
        return {"claim": self.statement, "sizes": self.protocol, "measured": self.measured,
                "threshold": self.reference, "holds": bool(self.verdict)}

    @classmethod
    def from_theory_row(cls, row: dict) -> Claim:
        return cls(row["claim"], row["measured"], row["threshold"], bool(row["holds"]), row["sizes"])
