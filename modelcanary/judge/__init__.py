"""The canary judge: a pipeline of typed stages, each recording its reason.

clean (:mod:`.clean`) -> evidence (:mod:`.evidence`) -> per-gate verdicts
(:mod:`.gates`) -> scorecard (:mod:`.scorecard`) -> decision (:mod:`.decide`).
"""

from __future__ import annotations

from modelcanary.judge.decide import JudgeContext, Judgement, judge
from modelcanary.judge.evidence import RolloutEvidence
from modelcanary.judge.verdicts import GateVerdict, Verdict

__all__ = ["GateVerdict", "JudgeContext", "Judgement", "RolloutEvidence", "Verdict", "judge"]
