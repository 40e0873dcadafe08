"""Reading a rollout's decisions: outcome, gate series, tolerances, step starts, frames.

The decisions come from the real judge on a simulated rollout (tests/simulated_rollout.py),
with drift off so no Evidently run is needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelcanary.report import Rollout, arms_frame, decisions_frame, drift_frame, gates_frame
from modelcanary.report.timeline import GateSpec, parse_ts, tolerance
from tests.simulated_rollout import BAD, GOOD, decision_dicts, report_policy, simulate


@pytest.fixture(scope="module")
def good() -> list[dict[str, Any]]:
    return decision_dicts(simulate("m", GOOD, policy=report_policy(drift=False)))


@pytest.fixture(scope="module")
def bad() -> list[dict[str, Any]]:
    return decision_dicts(simulate("m", BAD, policy=report_policy(drift=False)))


def test_good_rollout_reads_as_promoted(good: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(good)
    assert rollout.outcome == "promoted" and rollout.finished
    assert rollout.final["action"] == "promote"
    assert (rollout.champion_version, rollout.challenger_version) == ("1", "2")
    summary = rollout.evidence_summary()
    assert summary["evaluations"] == len(good)
    assert summary["steps_seen"] == summary["steps_total"] == 3
    assert summary["challenger_predictions"] > 0


def test_order_comes_from_timestamps_not_input_order(good: list[dict[str, Any]]) -> None:
    shuffled = list(reversed(good))
    rollout = Rollout.from_decisions(shuffled, run_ids=[f"run-{i}" for i in range(len(good))])
    assert [d["event_id"] for d in rollout.decisions] == [d["event_id"] for d in good]
    assert rollout.run_ids[-1] == "run-0"  # run ids travel with their decision


def test_times_start_when_the_rollout_started(good: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(good)
    first_elapsed = good[0]["evidence"]["step"]["elapsed_s"]
    assert rollout.t(rollout.decisions[0]) == pytest.approx(first_elapsed)
    starts = rollout.step_changes()
    assert [index for _, index, _, _ in starts] == [0, 1, 2]
    assert starts[0][0] == pytest.approx(0.0)
    assert [mode for *_, mode in starts] == ["shadow", "canary", "canary"]
    assert starts[0][0] < starts[1][0] < starts[2][0] <= rollout.duration_s


def test_each_gate_has_a_point_per_judged_decision(good: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(good)
    series = rollout.gate_series()
    assert list(series) == ["accuracy", "error_rate", "latency_p95", "kpi.converted"]
    for points in series.values():
        assert len(points) == len(rollout.judged())
        assert [p.t for p in points] == sorted(p.t for p in points)
    final = series["accuracy"][-1]
    assert final.verdict == "pass"
    assert final.lower is not None and final.upper is not None
    assert final.lower <= final.estimate <= final.upper  # type: ignore[operator]
    # the tolerance is the margin on the difference scale, on the side that is worse
    assert {p.tolerance for p in series["accuracy"]} == {-0.05}
    assert {p.tolerance for p in series["error_rate"]} == {0.02}
    assert {p.tolerance for p in series["kpi.converted"]} == {-0.08}
    latency = [p for p in series["latency_p95"] if p.champion is not None]
    for p in latency:  # +50% of the champion's p95, at least +5 ms
        assert p.tolerance == pytest.approx(max(0.5 * p.champion, 5.0), rel=1e-9)


def test_kpi_gate_is_not_applicable_in_the_shadow_step(good: list[dict[str, Any]]) -> None:
    points = Rollout.from_decisions(good).gate_series()["kpi.converted"]
    shadow = [p for p in points if p.step == 0]
    assert shadow and {p.verdict for p in shadow} == {"not_applicable"}


def test_bad_rollout_reads_as_rolled_back_on_accuracy(bad: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(bad)
    assert rollout.outcome == "rolled back"
    assert "accuracy" in rollout.final["reason"]
    assert rollout.final_gates()["accuracy"]["verdict"] == "fail"


def test_an_unfinished_rollout_is_in_progress(good: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(good[:2])
    assert rollout.outcome == "in progress" and not rollout.finished
    assert rollout.final is rollout.decisions[-1]


def test_an_operator_abort_keeps_the_last_evidence(good: list[dict[str, Any]]) -> None:
    abort = {
        **good[1],
        "event_id": "abort-1",
        "action": "abort",
        "to_state": "aborted",
        "reason": "Aborted by an operator.",
        "evidence": {},
        "ts": "2030-01-01T00:00:00Z",
    }
    rollout = Rollout.from_decisions([*good[:2], abort])
    assert rollout.outcome == "aborted"
    assert rollout.evidence is good[1]["evidence"]
    assert len(rollout.judged()) == 2


def test_tolerance_of_relative_margins() -> None:
    spec = GateSpec("log_loss", "log_loss", "lower_is_better", 0.1, "relative", 0.0, True)
    assert tolerance(spec, {"champion": 0.4}) == pytest.approx(0.04)
    higher = GateSpec("kpi.revenue", "kpi.revenue", "higher_is_better", 0.2, "relative", 0, False)
    assert tolerance(higher, {"champion": 10.0}) == pytest.approx(-2.0)
    assert tolerance(higher, {"champion": None}) is None
    drift = GateSpec("input_drift", "input_drift", "lower_is_better", 0.3, "absolute", 0, False)
    assert tolerance(drift, {"estimate": 0.5}) == 0.3
    assert tolerance(None, {"champion": 3.0, "details": {"tolerated": 8.0}}) == 5.0


def test_parse_ts() -> None:
    assert parse_ts("2025-03-01T09:30:10.000Z") - parse_ts("2025-03-01T09:30:00Z") == 10.0
    assert parse_ts(None) == 0.0 and parse_ts("not a time") == 0.0


def test_frames(good: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(good)
    gates = gates_frame(rollout)
    assert len(gates) == 4 * len(rollout.judged())
    assert set(gates["gate"]) == {"accuracy", "error_rate", "latency_p95", "kpi.converted"}
    decisions = decisions_frame(rollout)
    assert list(decisions["action"])[-1] == "promote"
    assert decisions["t"].is_monotonic_increasing
    arms = arms_frame(rollout)
    assert set(arms["arm"]) == {"champion", "challenger"}
    assert arms["latency_p95"].notna().all()  # the latency summary rode along
    assert drift_frame(rollout).empty  # drift was off


def test_drift_frame_lists_drifted_columns_first(good: list[dict[str, Any]]) -> None:
    evidence = {
        **good[-1]["evidence"],
        "drift": {
            "input_drift": {
                "columns": {
                    "a": {
                        "method": "wasserstein",
                        "score": 0.05,
                        "threshold": 0.1,
                        "drifted": False,
                    },
                    "b": {"method": "wasserstein", "score": 0.3, "threshold": 0.1, "drifted": True},
                    "c": {
                        "method": "wasserstein",
                        "score": 0.08,
                        "threshold": 0.1,
                        "drifted": False,
                    },
                }
            },
            "prediction_drift": None,
        },
    }
    rollout = Rollout.from_decisions([{**good[-1], "evidence": evidence}])
    assert list(drift_frame(rollout)["column"]) == ["b", "c", "a"]


def test_a_report_needs_a_decision() -> None:
    with pytest.raises(ValueError, match="at least one decision"):
        Rollout.from_decisions([])


def test_a_hold_recorded_after_the_end_does_not_reopen_it(good: list[dict[str, Any]]) -> None:
    hold = next(d for d in reversed(good) if d["action"] == "hold")
    late = {**hold, "event_id": "late", "ts": "2030-01-01T00:00:00Z"}
    rollout = Rollout.from_decisions([*good, late])
    assert rollout.outcome == "promoted" and rollout.final["event_id"] == good[-1]["event_id"]


def test_a_halt_waits_for_a_human_and_a_resume_continues(good: list[dict[str, Any]]) -> None:
    halt = {**good[1], "event_id": "h", "action": "halt", "to_state": "halted",
            "ts": "2030-01-01T00:00:00Z"}  # fmt: skip
    rollout = Rollout.from_decisions([*good[:2], halt])
    assert rollout.outcome == "halted" and not rollout.finished
    resume = {**halt, "event_id": "r", "action": "resume", "to_state": "running:0",
              "evidence": {}, "ts": "2030-01-01T00:01:00Z"}  # fmt: skip
    assert Rollout.from_decisions([*good[:2], halt, resume]).outcome == "in progress"
