"""The SLO burn-rate gate in the judge: a burning challenger is halted with a reason an
operator can act on; small samples, healthy challengers and policies without ``slos``
are not; the evidence carries every number; the windows come from event timestamps."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from rich.console import Console

from modelcanary.cli.rollout import _slo_table
from modelcanary.events import Action, Arm, DecisionEvent, Mode, PredictionEvent, to_dict
from modelcanary.judge import JudgeContext, Judgement, RolloutEvidence, judge
from modelcanary.judge.slo_gate import BurnVerdict, evaluate_slos
from modelcanary.judge.slo_windows import SloWindows
from modelcanary.policy import Policy, default_policy, policy_from_dict
from modelcanary.report import Rollout, render_html

T0 = 1_800_000_000.0
SLOS = {
    "availability": {"objective": 0.999},
    "latency": {"threshold_ms": 250, "objective": 0.99},
    "burn_rate": {"windows": [{"long_s": 300, "short_s": 30, "max_multiple": 14.4}]},
}


def slo_policy(**slos: object) -> Policy:
    """The default policy without its error_rate gate (which would roll a failing
    challenger back before its error budget is looked at), with SLOs."""
    raw = default_policy().to_dict()
    raw["gates"] = [g for g in raw["gates"] if g["metric"] != "error_rate"]
    raw["slos"] = {**SLOS, **slos}
    return policy_from_dict(raw)


def traffic(
    ev: RolloutEvidence,
    arm: Arm,
    seconds: float,
    per_s: float,
    errors: float = 0.0,
    latency_ms: float = 20.0,
    start: float = T0,
    seed: int = 0,
    timed: bool = True,
) -> RolloutEvidence:
    rng = np.random.default_rng(seed)
    n = round(seconds * per_s)
    times = start + np.sort(rng.uniform(0, seconds, n))
    latencies = latency_ms * rng.lognormal(0.0, 0.3, n)
    return ev.add_predictions(
        arm, Mode.CANARY, latencies, rng.random(n) < errors, 0, times_s=times if timed else None
    )


def run(policy: Policy, ev: RolloutEvidence, now: float = T0 + 300) -> Judgement:
    j = judge(policy, ev, JudgeContext("rollout-1", 0, now - 60, now))
    json.dumps(j.evidence, allow_nan=False)
    assert j.reason.endswith(".") and "\n" not in j.reason
    return j


def test_a_burning_challenger_is_halted_with_the_numbers() -> None:
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 10, errors=0.05)
    traffic(ev, Arm.CHAMPION, 300, 40, errors=0.0005, seed=1)
    j = run(slo_policy(), ev)
    assert j.action is Action.HALT
    assert j.reason.startswith("Halt: error budget burning: challenger availability 9")
    for part in (
        "over the last 300 s (burn rate",
        "at least",
        "confidence)",
        "over the last 30 s, above the 14.4x limit of objective 99.9%",
        "champion 99.9",
    ):
        assert part in j.reason
    slos = j.evidence["slos"]
    assert slos["burning"] and slos["alpha"] == pytest.approx(slo_policy().slo_alpha)
    availability, latency = slos["objectives"]
    assert (availability["verdict"], latency["verdict"]) == ("burning", "ok")
    window = availability["windows"][0]
    long = window["challenger"]["long"]
    assert long["calls"] == pytest.approx(3000, abs=20)
    assert window["burn_rate"] == pytest.approx(long["bad"] / long["calls"] / 0.001)
    assert 14.4 < window["burn_rate_lower"] < window["burn_rate"]
    assert window["log_evalue"] >= window["threshold_log_evalue"]
    assert window["champion"]["long"]["burn_rate"] < 2
    assert j.evidence["alpha"]["slos"] == slos["alpha"]


def test_a_slow_challenger_burns_the_latency_budget() -> None:
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 5, latency_ms=400)
    traffic(ev, Arm.CHAMPION, 300, 20, seed=1)
    j = run(slo_policy(), ev)
    assert j.action is Action.HALT
    assert "challenger latency " in j.reason and "% of calls within 250 ms" in j.reason
    assert "availability" not in j.reason  # only the burning objective is named


def test_a_critical_gate_failure_still_rolls_back_first() -> None:
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 10, errors=0.3)
    traffic(ev, Arm.CHAMPION, 300, 40, seed=1)
    raw = slo_policy().to_dict()
    raw["gates"].append({"metric": "error_rate", "margin": 0.01, "critical": True})
    assert run(policy_from_dict(raw), ev).action is Action.ROLLBACK


def test_two_failures_in_twenty_calls_do_not_halt() -> None:
    ev = RolloutEvidence()
    ev.add_predictions(
        Arm.CHALLENGER, Mode.CANARY, np.full(20, 5.0), np.arange(20) < 2,
        times_s=T0 + 280 + np.arange(20),
    )  # fmt: skip
    policy = slo_policy(burn_rate={**SLOS["burn_rate"], "min_calls": 1})
    j = run(policy, ev)
    availability = j.evidence["slos"]["objectives"][0]
    assert availability["verdict"] == "watch"  # 100x at face value, not shown
    assert "not yet shown with confidence" in availability["reason"]
    assert j.action is not Action.HALT
    assert run(slo_policy(), ev).evidence["slos"]["objectives"][0]["verdict"] == "no_data"


def test_a_burn_that_stopped_does_not_halt() -> None:
    """Failing for 270 s, healthy for the last 30: the long window burns, the short one
    does not (the SRE workbook's reset)."""
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 270, 10, errors=0.05)
    traffic(ev, Arm.CHALLENGER, 30, 10, start=T0 + 270, seed=2)
    result = evaluate_slos(slo_policy(), ev.slo_windows(), T0 + 300)
    assert result is not None
    window = result.verdicts[0].windows[0]
    assert window.log_evalue >= window.threshold_log_evalue  # type: ignore[operator]
    assert window.verdict is BurnVerdict.OK and not result.burning


def test_a_healthy_challenger_never_fires_over_a_whole_rollout() -> None:
    """Meeting both objectives, looked at every 5 s over the 900 s the policy plans."""
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 900, 20, errors=0.001, latency_ms=60)
    policy = slo_policy()
    for now in np.arange(T0 + 5, T0 + 900, 5.0):
        result = evaluate_slos(policy, ev.slo_windows(), float(now))
        assert result is not None and not result.burning, result.sentence()


def test_without_slos_nothing_changes() -> None:
    """A policy without ``slos`` decides the same whether or not the evidence holds
    timestamped windows, and its evidence says there is no SLO gate."""
    plain = replace(slo_policy(), slos=None)
    judged = []
    for timed in (True, False):
        ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 10, errors=0.05, timed=timed)
        traffic(ev, Arm.CHAMPION, 300, 40, seed=1, timed=timed)
        judged.append(run(plain, ev))
    timed_j, bare_j = judged
    assert timed_j.action is Action.HOLD and "error budget" not in timed_j.reason
    assert (timed_j.action, timed_j.reason, timed_j.verdicts) == (
        bare_j.action, bare_j.reason, bare_j.verdicts,
    )  # fmt: skip
    assert timed_j.evidence["slos"] is None and timed_j.evidence["alpha"]["slos"] == 0.0


def test_windows_end_at_the_newest_call_but_never_after_the_clock() -> None:
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 10, errors=0.03)
    policy = slo_policy()
    late = evaluate_slos(policy, ev.slo_windows(), T0 + 3_000)  # no calls for 45 min
    assert (
        late is not None and late.end_bucket == ev.slo_windows().arm(Arm.CHALLENGER).newest_bucket
    )
    early = evaluate_slos(policy, ev.slo_windows(), T0 + 100)  # router clocks ahead
    assert early is not None and early.end_bucket == int((T0 + 100) // 5)
    assert early.position == 20


def test_an_error_in_one_objective_becomes_its_error_verdict() -> None:
    broken = slo_policy()
    assert broken.slos is not None and broken.slos.latency is not None
    object.__setattr__(broken.slos.latency, "threshold_ms", -1.0)  # past validation
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 10)
    result = evaluate_slos(broken, ev.slo_windows(), T0 + 300)
    assert result is not None
    assert [v.verdict for v in result.verdicts] == [BurnVerdict.OK, BurnVerdict.ERROR]
    assert "could not be evaluated: ValueError" in result.verdicts[1].reason


# ------------------------------------------------------------------- from prediction events


def _event(ts: str, arm: Arm = Arm.CHALLENGER, error: str | None = None) -> PredictionEvent:
    return PredictionEvent(
        model="m", request_id="r", version="2", arm=arm, mode=Mode.SHADOW, served=False,
        prediction=1, latency_ms=300.0, error=error, rollout_id="r1", step=0, ts=ts,
    )  # fmt: skip


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_events_are_filed_by_their_timestamp() -> None:
    w = SloWindows()
    for ts in (_iso(T0), _iso(T0 + 0.5), _iso(T0 + 0.9)):  # one second: parsed once
        w.observe(_event(ts, error="boom"))
    w.observe(_event(_iso(T0 + 1.0)))
    w.observe(_event("yesterday"))
    w.observe(_event(_iso(T0), arm=Arm.CHAMPION))
    chal = w.arm(Arm.CHALLENGER)
    totals = chal.window(chal.bucket_of(T0), 5)
    assert (totals.calls, totals.errors) == (4, 3)
    assert chal.slower_than(250, chal.bucket_of(T0), 5) == 4  # shadow calls count too
    assert w.unparsed == 1 and w.arm(Arm.CHAMPION).n == 1


def test_timestamp_offsets_are_honoured() -> None:
    w = SloWindows()
    for ts in (
        "2027-03-01T08:00:00+00:00", "2027-03-01T10:00:01+02:00", "2027-03-01T08:00:02",
        "2027-03-01T08:00:03.5Z", "2027-03-01T08:00:09Z",
    ):  # fmt: skip
        w.observe(_event(ts))
    chal = w.arm(Arm.CHALLENGER)
    eight = datetime(2027, 3, 1, 8, tzinfo=UTC).timestamp()
    assert chal.window(chal.bucket_of(eight), 5).calls == 4
    assert chal.window(chal.bucket_of(eight + 5), 5).calls == 1


def test_evidence_merges_and_pickles_its_windows() -> None:
    parts = [RolloutEvidence() for _ in range(3)]
    whole = RolloutEvidence()
    for i in range(60):
        event = _event(_iso(T0 + i), error="x" if i % 7 == 0 else None)
        parts[i % 3].observe_prediction(event)
        whole.observe_prediction(event)
    merged = RolloutEvidence.merged(parts)
    assert merged.slo_windows() == whole.slo_windows()
    again = pickle.loads(pickle.dumps(merged))
    assert again.slo_windows() == whole.slo_windows()
    state = whole.__getstate__()
    del state["_slo"]  # a snapshot written before the SLO gate existed
    old = RolloutEvidence.__new__(RolloutEvidence)
    old.__setstate__(state)
    assert old.slo_windows().arm(Arm.CHALLENGER).n == 0


# ----------------------------------------------------------------- where operators read it


def _decision(j: Judgement) -> dict[str, object]:
    event = DecisionEvent(
        model="m", rollout_id="rollout-1", action=j.action, from_state="running:0",
        to_state="halted:0" if j.action is Action.HALT else "running:0", traffic_fraction=0.05,
        reason=j.reason,
        evidence={**j.evidence, "champion_version": "1", "challenger_version": "2"},
    )  # fmt: skip
    return to_dict(event)


def test_the_report_and_the_status_table_show_the_budgets() -> None:
    ev = traffic(RolloutEvidence(), Arm.CHALLENGER, 300, 10, errors=0.05)
    traffic(ev, Arm.CHAMPION, 300, 40, seed=1)
    halted = run(slo_policy(), ev)
    html = render_html(Rollout.from_decisions([_decision(halted)]))
    section = html[html.index('<section id="slos">') :]
    section = section[: section.index("</section>")]
    assert "error budget burning" in section and "availability" in section
    assert section.count("<tr>") == 1 + 2  # header, availability, latency
    assert '<a href="#slos">' in html
    plain = run(replace(slo_policy(), slos=None), ev)
    assert 'id="slos"' not in render_html(Rollout.from_decisions([_decision(plain)]))

    console = Console(width=200, record=True)
    console.print(_slo_table(halted.evidence["slos"]))
    text = console.export_text()
    assert "availability (99.9%)" in text and "burning" in text and "[at least]" in text
    assert "latency <= 250 ms (99%)" in text
