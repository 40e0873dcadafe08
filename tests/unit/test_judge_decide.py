"""The judge's decisions: rollback, halt, advance, promote, timeout, hold, error verdicts."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace

import numpy as np
import pytest

from modelcanary.errors import RolloutError
from modelcanary.events import Action, Arm, Mode
from modelcanary.judge import JudgeContext, Judgement, RolloutEvidence, Verdict, judge
from modelcanary.policy import (
    Direction,
    Gate,
    Policy,
    Step,
    TimeoutAction,
    default_policy,
)

POLICY = default_policy()


def evidence(
    step: int = 0,
    chal_acc: float = 0.96,
    n_chal: int = 1500,
    chal_errors: float = 0.0,
    chal_latency: float = 1.0,
    fraction: float | None = None,
    chal_share: float | None = None,
    mode: Mode = Mode.CANARY,
    seed: int = 0,
) -> RolloutEvidence:
    """Evidence of one step: the champion at accuracy 0.96 with no errors."""
    rng = np.random.default_rng(seed)
    fraction = POLICY.steps[step].traffic_fraction if fraction is None else fraction
    share = fraction if chal_share is None else chal_share
    # canary: the champion serves the rest; shadow: it serves everyone
    n_champ = round(n_chal * ((1 - share) if mode is Mode.CANARY else 1.0) / share)
    ev = RolloutEvidence()
    for arm, n, acc, err, lat in (
        (Arm.CHALLENGER, n_chal, chal_acc, chal_errors, chal_latency),
        (Arm.CHAMPION, n_champ, 0.96, 0.0, 1.0),
    ):
        ev.add_metric("accuracy", arm, rng.random(n) < acc, step=step)
        ev.add_metric("kpi.converted", arm, rng.random(n) < 0.1, step=step)
        ev.add_predictions(
            arm, mode, lat * rng.lognormal(1.0, 0.3, n), rng.random(n) < err, step, fraction
        )
    return ev


def run(policy: Policy, ev: RolloutEvidence, step: int = 0, elapsed: float = 60.0) -> Judgement:
    j = judge(policy, ev, JudgeContext("rollout-1", step, 1000.0, 1000.0 + elapsed))
    json.dumps(j.evidence, allow_nan=False)  # always JSON-serialisable
    assert j.reason.endswith(".") and "\n" not in j.reason
    return j


def verdicts(j: Judgement) -> dict[str, Verdict]:
    return {v.gate: v.verdict for v in j.verdicts}


def test_all_gates_pass_and_minimums_met_advances() -> None:
    j = run(POLICY, evidence(step=0))
    assert verdicts(j) == dict.fromkeys(("accuracy", "error_rate", "latency_p95"), Verdict.PASS)
    assert j.action is Action.ADVANCE
    assert j.reason.startswith("Advance to 25% canary")


def test_all_gates_pass_at_the_last_step_promotes() -> None:
    assert run(POLICY, evidence(step=2), step=2).action is Action.PROMOTE


def test_critical_failure_rolls_back_with_the_numbers() -> None:
    j = run(POLICY, evidence(chal_acc=0.80))
    assert j.action is Action.ROLLBACK
    acc = next(v for v in j.verdicts if v.gate == "accuracy")
    assert acc.verdict is Verdict.FAIL
    assert acc.estimate == pytest.approx(-0.16, abs=0.04)
    assert acc.interval is not None and acc.interval[1] is not None and acc.interval[1] < -0.05
    assert acc.samples["challenger"] == 1500
    assert "accuracy" in j.reason and "worse than the 0.05 absolute margin" in j.reason


def test_error_rate_regression_rolls_back() -> None:
    j = run(POLICY, evidence(chal_errors=0.08))
    assert verdicts(j)["error_rate"] is Verdict.FAIL
    assert j.action is Action.ROLLBACK


def test_non_critical_failure_holds_then_times_out() -> None:
    ev = evidence(chal_latency=3.0)
    j = run(POLICY, ev, elapsed=60)
    assert verdicts(j)["latency_p95"] is Verdict.FAIL
    assert j.action is Action.HOLD and "a human should look" in j.reason
    assert run(POLICY, ev, elapsed=301).action is Action.ROLLBACK


def test_minimum_samples_and_duration_hold_the_step() -> None:
    policy = replace(
        POLICY,
        steps=(
            Step(0.05, min_samples=5000, min_duration_s=10, max_duration_s=300),
            *POLICY.steps[1:],
        ),
    )
    j = run(policy, evidence(step=0), elapsed=60)
    assert j.action is Action.HOLD and "5000 challenger samples" in j.reason
    j = run(POLICY, evidence(step=0), elapsed=5)
    assert j.action is Action.HOLD and "10 s" in j.reason


def test_inconclusive_until_timeout_then_on_timeout() -> None:
    few = evidence(n_chal=40)
    j = run(POLICY, few, elapsed=30)
    assert j.action is Action.HOLD
    assert any(v.verdict is Verdict.INCONCLUSIVE and v.samples_needed for v in j.verdicts)
    timed_out = run(POLICY, few, elapsed=300)
    assert timed_out.action is Action.ROLLBACK and "maximum of 300 s" in timed_out.reason
    halting = replace(POLICY, on_timeout=TimeoutAction.HALT)
    assert run(halting, few, elapsed=300).action is Action.HALT


def test_sample_ratio_mismatch_halts() -> None:
    j = run(POLICY, evidence(fraction=0.05, chal_share=0.10))
    assert j.evidence["srm"]["detected"] is True
    assert j.action is Action.HALT and "sample ratio mismatch" in j.reason
    ok = run(POLICY, evidence(fraction=0.05))
    assert ok.evidence["srm"]["detected"] is False


def test_critical_failure_wins_over_srm() -> None:
    assert run(POLICY, evidence(chal_acc=0.7, chal_share=0.10)).action is Action.ROLLBACK


class _BrokenEvidence(RolloutEvidence):
    def arm_strata(self, metric: str, mode: Mode) -> dict:  # type: ignore[override]
        if metric == "accuracy":
            raise RuntimeError("corrupt accumulator")
        return super().arm_strata(metric, mode)


def test_exception_in_one_gate_becomes_its_error_verdict() -> None:
    ev = _BrokenEvidence().merge(evidence())
    j = run(POLICY, ev)
    v = verdicts(j)
    assert v["accuracy"] is Verdict.ERROR and v["error_rate"] is Verdict.PASS
    assert "corrupt accumulator" in next(x.reason for x in j.verdicts if x.gate == "accuracy")
    assert j.action is Action.HOLD


def test_kpi_gate_is_not_applicable_in_shadow_steps() -> None:
    policy = Policy(
        steps=(Step(0.1, mode=Mode.SHADOW, min_samples=0), Step(0.1, min_samples=0)),
        gates=(
            Gate("kpi.converted", Direction.HIGHER_IS_BETTER, margin=0.05, modes=(Mode.CANARY,)),
        ),
    )
    shadow = run(policy, evidence(step=0, fraction=0.1, mode=Mode.SHADOW), step=0)
    assert verdicts(shadow)["kpi.converted"] is Verdict.NOT_APPLICABLE
    assert shadow.action is Action.ADVANCE
    canary = run(policy, evidence(step=1, fraction=0.1), step=1)
    assert verdicts(canary)["kpi.converted"] is Verdict.PASS


def test_unknown_step_index_is_an_error() -> None:
    with pytest.raises(RolloutError, match="step_index 7"):
        judge(POLICY, RolloutEvidence(), JudgeContext("r", 7, 0.0, 1.0))


def test_judgement_evidence_carries_policy_alpha_and_samples() -> None:
    j = run(POLICY, evidence())
    e = j.evidence
    assert e["policy"] == POLICY.to_dict()
    assert e["alpha"]["total"] == 0.05
    assert sum(e["alpha"]["per_gate"].values()) + e["alpha"]["srm"] == pytest.approx(0.05)
    assert e["samples"]["predictions"]["challenger"] == 1500
    assert e["step"]["index"] == 0 and e["step"]["is_last"] is False
    assert {g["gate"] for g in e["gates"]} == {"accuracy", "error_rate", "latency_p95"}


def test_judge_is_cheap_with_the_default_policy() -> None:
    """Contract: <= ~50 ms per call (drift reports are memoised; warm them first)."""
    ev = evidence(n_chal=20_000)
    run(POLICY, ev)
    times = []
    for _ in range(15):
        t = time.perf_counter()
        judge(POLICY, ev, JudgeContext("r", 0, 0.0, 60.0))
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.05
