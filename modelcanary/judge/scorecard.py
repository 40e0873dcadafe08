"""Stage 3 of the judge: fold the verdicts and the SRM result into a scorecard.

Rules: a critical gate that fails vetoes the rollout; every applicable gate must pass
before the rollout may go on (a non-critical failure holds it for a human until the
step times out); a gate with no data, an inconclusive gate and a gate in error all
block; gates that do not apply to the step's mode are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelcanary.judge.verdicts import GateVerdict, Verdict
from modelcanary.stats.srm import SrmResult


@dataclass(frozen=True)
class Scorecard:
    verdicts: tuple[GateVerdict, ...]
    srm: SrmResult | None

    @property
    def applicable(self) -> tuple[GateVerdict, ...]:
        return tuple(v for v in self.verdicts if v.verdict is not Verdict.NOT_APPLICABLE)

    @property
    def critical_failures(self) -> tuple[GateVerdict, ...]:
        return tuple(v for v in self.applicable if v.critical and v.verdict is Verdict.FAIL)

    @property
    def other_failures(self) -> tuple[GateVerdict, ...]:
        return tuple(v for v in self.applicable if not v.critical and v.verdict is Verdict.FAIL)

    @property
    def blocking(self) -> tuple[GateVerdict, ...]:
        """Applicable gates that have not passed."""
        return tuple(v for v in self.applicable if v.verdict is not Verdict.PASS)

    @property
    def all_passed(self) -> bool:
        return not self.blocking

    @property
    def srm_detected(self) -> bool:
        return self.srm is not None and self.srm.detected

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for v in self.verdicts:
            out[v.verdict.value] += 1
        return out
