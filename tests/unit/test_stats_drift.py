"""Drift through Evidently 0.7 (slow: importing Evidently takes ~3 s)."""

from __future__ import annotations

import numpy as np
import pytest

from modelcanary.events import Arm, Mode, PredictionEvent
from modelcanary.judge import JudgeContext, RolloutEvidence, Verdict, judge
from modelcanary.policy import Direction, Gate, Policy, Step
from modelcanary.stats.drift import compute_drift

pytestmark = pytest.mark.slow


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, object]]:
    return [
        {"x": float(a), "y": float(b), "colour": str(c)}
        for a, b, c in zip(
            rng.normal(shift, 1, n), rng.normal(0, 1, n), rng.choice(["r", "g"], n), strict=True
        )
    ]


def test_shifted_column_is_drifted_and_others_are_not() -> None:
    rng = np.random.default_rng(41)
    report = compute_drift(rows(rng, 600), rows(rng, 500, shift=1.0))
    by = {c.column: c for c in report.columns}
    assert by["x"].drifted and not by["y"].drifted and not by["colour"].drifted
    assert by["x"].method == "wasserstein" and by["colour"].method == "jensenshannon"
    assert report.drifted_share == pytest.approx(1 / 3)
    assert report.to_dict()["rows"] == {"champion": 600, "challenger": 500}


def test_p_value_methods_can_be_pinned() -> None:
    rng = np.random.default_rng(42)
    report = compute_drift(rows(rng, 300), rows(rng, 300), "ks", "chisquare", 0.01)
    assert {c.method for c in report.columns} == {"ks", "chisquare"}
    assert not any(c.drifted for c in report.columns)


def test_input_drift_gate_in_the_judge_and_memoisation() -> None:
    rng = np.random.default_rng(43)
    policy = Policy(
        steps=(Step(0.5, min_samples=0),),
        gates=(Gate("input_drift", Direction.LOWER_IS_BETTER, margin=0.0, critical=True),),
    )
    ev = RolloutEvidence()
    for i in range(400):
        arm = Arm.CHALLENGER if i % 2 else Arm.CHAMPION
        shift = 2.0 if arm is Arm.CHALLENGER else 0.0  # a cohort bug: different users
        ev.observe_prediction(
            PredictionEvent(
                "m",
                f"r{i}",
                "1",
                arm,
                Mode.CANARY,
                True,
                1,
                score=0.7,
                latency_ms=1.0,
                step=0,
                traffic_fraction=0.5,
                features=rows(rng, 1, shift)[0],
            )
        )
    j = judge(policy, ev, JudgeContext("r", 0, 0.0, 1.0))
    assert j.verdicts[0].verdict is Verdict.FAIL
    assert j.evidence["drift"]["input_drift"]["columns"]["x"]["drifted"] is True
    cached = dict(ev.drift_cache)
    judge(policy, ev, JudgeContext("r", 0, 0.0, 2.0))
    assert all(ev.drift_cache[k][1] is cached[k][1] for k in cached)  # not recomputed
