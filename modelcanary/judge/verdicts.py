"""Verdicts: what a gate concluded, with the numbers behind it.

A verdict is an enum, never a string compared by hand: ``pass`` (the challenger is
shown to be within the margin), ``fail`` (shown to be worse than the margin),
``inconclusive`` (not shown either way yet; with how many more challenger samples the
current estimate suggests), ``no_data``, ``error`` (evaluating the gate raised: the
exception becomes this verdict, the judge goes on) and ``not_applicable`` (the gate is
not judged in this step's mode, e.g. a KPI gate in a shadow step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelcanary.events import Mode
from modelcanary.policy import DriftSettings, Gate


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"
    ERROR = "error"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class GateVerdict:
    """A gate's verdict with the numbers behind it.

    ``estimate`` is challenger minus champion in the metric's units, ``interval`` its
    anytime-valid bounds (None for an unbounded side), ``samples`` the values per arm
    the comparison used, ``samples_needed`` more challenger samples the current
    estimate suggests before a verdict (inconclusive only).
    """

    gate: str
    metric: str
    verdict: Verdict
    critical: bool
    reason: str
    estimate: float | None = None
    interval: tuple[float | None, float | None] | None = None
    champion: float | None = None
    challenger: float | None = None
    margin: str = ""
    samples: dict[str, int] = field(default_factory=dict)
    samples_needed: int | None = None
    alpha: float | None = None
    method: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "metric": self.metric,
            "verdict": self.verdict.value,
            "critical": self.critical,
            "reason": self.reason,
            "estimate": finite(self.estimate),
            "interval": None
            if self.interval is None
            else [finite(self.interval[0]), finite(self.interval[1])],
            "champion": finite(self.champion),
            "challenger": finite(self.challenger),
            "margin": self.margin,
            "samples": dict(self.samples),
            "samples_needed": self.samples_needed,
            "alpha": self.alpha,
            "method": self.method,
            "details": self.details,
        }


def finite(x: float | None) -> float | None:
    """JSON has no NaN or infinity: those become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "unbounded"
    return f"{x:+.{digits}g}" if x < 0 else f"{x:.{digits}g}"


@dataclass(frozen=True)
class GateContext:
    """What a gate evaluator needs besides the evidence."""

    gate: Gate
    mode: Mode
    alpha: float
    design_samples: int
    min_samples_per_arm: int
    drift: DriftSettings
