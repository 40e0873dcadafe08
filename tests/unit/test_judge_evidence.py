"""RolloutEvidence: merging partial evidence equals one pass; pickling; bulk adds equal
event-by-event observation."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.join import JoinedRequest
from modelcanary.judge import JudgeContext, RolloutEvidence, judge
from modelcanary.policy import DriftSettings, default_policy, load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def traffic(
    seed: int, n: int, mode: Mode = Mode.CANARY, step: int = 0, fraction: float = 0.3
) -> list[Any]:
    """A stream of prediction events and joined requests of one step."""
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for i in range(n):
        rid = f"{seed}-{step}-{i}"
        unit = f"u{rng.integers(0, n // 3 + 1)}" if rng.random() < 0.3 else None
        y = int(rng.integers(0, 2))
        chal = rng.random() < fraction
        arms = (
            [Arm.CHAMPION, Arm.CHALLENGER]
            if mode is Mode.SHADOW and chal
            else [Arm.CHALLENGER if chal else Arm.CHAMPION]
        )
        preds = {}
        for arm in arms:
            err = "timeout" if rng.random() < 0.02 else None
            p = int(y if rng.random() < 0.9 else 1 - y)
            preds[arm] = PredictionEvent(
                model="m",
                request_id=rid,
                version="1",
                arm=arm,
                mode=mode,
                served=arm is Arm.CHAMPION or mode is Mode.CANARY,
                prediction=None if err else p,
                score=None if err else float(rng.uniform(0.05, 0.95)),
                latency_ms=float(rng.lognormal(1.0, 0.5)),
                error=err,
                unit_id=unit,
                step=step,
                traffic_fraction=fraction,
                features={"x": float(rng.normal()), "c": str(rng.integers(0, 3))},
            )
            out.append(preds[arm])
        outcome = (
            OutcomeEvent("m", rid, label=y, kpis={"converted": float(rng.random() < 0.2)})
            if rng.random() < 0.9
            else None
        )
        out.append(JoinedRequest(rid, preds, outcome))
    return out


def feed(ev: RolloutEvidence, items: list[Any]) -> RolloutEvidence:
    for item in items:
        if isinstance(item, PredictionEvent):
            assert ev.observe_prediction(item) is ev
        else:
            assert ev.observe_request(item) is ev
    return ev


def numbers(ev: RolloutEvidence, step_index: int = 0) -> Any:
    policy = load_policy(EXAMPLE)
    policy = replace(policy, drift=DriftSettings(enabled=False))
    j = judge(policy, ev, JudgeContext("r", step_index, 0.0, 5.0))
    return (
        j.action,
        [(v["verdict"], v["estimate"], v["interval"], v["samples"]) for v in j.evidence["gates"]],
        j.evidence["srm"],
        j.evidence["samples"],
    )


def approx_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-9)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(approx_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(approx_equal(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 400), st.sampled_from([Mode.CANARY, Mode.SHADOW]))
def test_merge_of_partitions_equals_one_pass(seed: int, cut: int, mode: Mode) -> None:
    items = traffic(seed, 200, mode, step=1 if mode is Mode.CANARY else 0) + traffic(
        seed + 1, 100, mode, step=2
    )
    whole = feed(RolloutEvidence(), items)
    # partition like a consumer group would: by request id, not by position
    parts = [RolloutEvidence(), RolloutEvidence(), RolloutEvidence()]
    for item in items:
        feed(
            parts[hash(item.request_id) % 3 if cut % 2 else (len(item.request_id) + cut) % 3],
            [item],
        )
    merged = parts[0].merge(parts[1]).merge(parts[2])
    step_index = 0 if mode is Mode.SHADOW else 1  # the example policy: shadow, then canary
    assert approx_equal(numbers(merged, step_index), numbers(whole, step_index))
    assert merged.inputs(mode, Arm.CHALLENGER).items() == whole.inputs(mode, Arm.CHALLENGER).items()
    assert (
        merged.latency_sketch(mode, Arm.CHAMPION).__getstate__()
        == whole.latency_sketch(mode, Arm.CHAMPION).__getstate__()
    )


def test_pickling_round_trips_and_stays_usable() -> None:
    ev = feed(RolloutEvidence(), traffic(3, 300))
    back = pickle.loads(pickle.dumps(ev))
    assert approx_equal(numbers(back), numbers(ev))
    feed(back, traffic(4, 10))
    assert back.summary()["requests_joined"] > ev.summary()["requests_joined"]


def test_bulk_adds_equal_event_by_event() -> None:
    rng = np.random.default_rng(5)
    acc_c, acc_0 = rng.random(400) < 0.9, rng.random(400) < 0.92
    lat_c, lat_0 = rng.lognormal(1, 0.3, 400), rng.lognormal(1, 0.3, 400)
    bulk = RolloutEvidence()
    bulk.add_metric("accuracy", Arm.CHALLENGER, acc_c).add_metric("accuracy", Arm.CHAMPION, acc_0)
    bulk.add_predictions(Arm.CHALLENGER, Mode.CANARY, lat_c, traffic_fraction=0.5)
    bulk.add_predictions(Arm.CHAMPION, Mode.CANARY, lat_0, traffic_fraction=0.5)
    events = RolloutEvidence()
    for i in range(400):
        for arm, acc, lat in ((Arm.CHALLENGER, acc_c, lat_c), (Arm.CHAMPION, acc_0, lat_0)):
            p = PredictionEvent(
                "m",
                f"{arm}{i}",
                "1",
                arm,
                Mode.CANARY,
                True,
                int(acc[i]),
                latency_ms=float(lat[i]),
                step=0,
                traffic_fraction=0.5,
            )
            events.observe_prediction(p)
            events.observe_request(
                JoinedRequest(p.request_id, {arm: p}, OutcomeEvent("m", p.request_id, label=1))
            )
    policy = default_policy()
    a = judge(policy, bulk, JudgeContext("r", 0, 0.0, 1.0))
    b = judge(policy, events, JudgeContext("r", 0, 0.0, 1.0))
    assert approx_equal([v.to_dict() for v in a.verdicts], [v.to_dict() for v in b.verdicts])
    assert a.evidence["srm"] == b.evidence["srm"]


def test_evidence_is_json_safe_when_empty() -> None:
    j = judge(default_policy(), RolloutEvidence(), JudgeContext("r", 0, 0.0, 0.0))
    json.dumps(j.evidence, allow_nan=False)
    assert {v["verdict"] for v in j.evidence["gates"]} == {"no_data"}


def test_merge_does_not_alias_the_other_evidence() -> None:
    a, b = RolloutEvidence(), feed(RolloutEvidence(), traffic(6, 50))
    a.merge(b)
    before = numbers(b)
    feed(a, traffic(7, 50))
    assert approx_equal(numbers(b), before)


@pytest.mark.parametrize("mode", [Mode.CANARY, Mode.SHADOW])
def test_counts_by_step_and_arm(mode: Mode) -> None:
    ev = feed(RolloutEvidence(), traffic(8, 100, mode, step=0) + traffic(9, 50, mode, step=1))
    assert ev.predictions(Arm.CHALLENGER, 1) <= ev.predictions(Arm.CHALLENGER)
    assert ev.predictions(Arm.CHAMPION) + ev.predictions(Arm.CHALLENGER) >= 150


def _router_events(
    mode: Mode, n: int, fraction: float, seed: int, units: bool
) -> list[PredictionEvent]:
    """Events as modelcanary.router emits them: a failed challenger falls back to the
    champion (canary); a failed champion is not mirrored (shadow)."""
    rng = np.random.default_rng(seed)
    out = []

    def event(rid: str, arm: Arm, error: str | None, unit: str | None) -> PredictionEvent:
        return PredictionEvent(
            "m",
            rid,
            "1",
            arm,
            mode,
            served=error is None and not (mode is Mode.SHADOW and arm is Arm.CHALLENGER),
            prediction=None if error else 1,
            latency_ms=1.0,
            error=error,
            unit_id=unit,
            step=0,
            traffic_fraction=fraction,
        )

    for i in range(n):
        rid, unit = f"r{i}", (f"u{rng.integers(0, n // 4)}" if units else None)
        key = unit or rid
        chal = (hash(key) % 10_000) / 10_000 < fraction if units else rng.random() < fraction
        if mode is Mode.CANARY and chal:
            failed = rng.random() < 0.3
            out.append(event(rid, Arm.CHALLENGER, "boom" if failed else None, unit))
            if failed:
                out.append(event(rid, Arm.CHAMPION, None, unit))
        else:
            champ_failed = rng.random() < 0.1
            out.append(event(rid, Arm.CHAMPION, "boom" if champ_failed else None, unit))
            if mode is Mode.SHADOW and chal and not champ_failed:
                out.append(event(rid, Arm.CHALLENGER, "boom" if rng.random() < 0.3 else None, unit))
    return out


@pytest.mark.parametrize("mode", [Mode.CANARY, Mode.SHADOW])
@pytest.mark.parametrize("units", [False, True])
def test_srm_counts_follow_the_router_and_raise_no_false_alarm(mode: Mode, units: bool) -> None:
    ev = RolloutEvidence()
    for p in _router_events(mode, 12_000, 0.2, 1, units):
        ev.observe_prediction(p)
    policy = replace(default_policy(), drift=DriftSettings(enabled=False))
    step = replace(policy.steps[0], mode=mode, traffic_fraction=0.2)
    policy = replace(policy, steps=(step,))
    srm = judge(policy, ev, JudgeContext("r", 0, 0.0, 1.0)).evidence["srm"]
    assert srm["detected"] is False
    stratum = srm["strata"][0]
    assert stratum["observed_fraction"] == pytest.approx(0.2, abs=0.02)
    # the same events claiming a 10% split are a mismatch
    wrong = RolloutEvidence()
    for p in _router_events(mode, 12_000, 0.2, 1, units):
        wrong.observe_prediction(replace(p, traffic_fraction=0.1))
    assert judge(policy, wrong, JudgeContext("r", 0, 0.0, 1.0)).evidence["srm"]["detected"] is True
