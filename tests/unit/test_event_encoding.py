"""The publisher's fast encoder writes exactly the bytes of the event contract's encoder."""

from __future__ import annotations

import math

import pytest

from modelcanary.events import (
    Action,
    Arm,
    DecisionEvent,
    Mode,
    OutcomeEvent,
    PredictionEvent,
    encode,
)
from modelcanary.kafka_io import encode_event

EVENTS = [
    PredictionEvent(
        model="m",
        request_id="r",
        version="2",
        arm=Arm.CHALLENGER,
        mode=Mode.SHADOW,
        served=False,
        prediction=1,
        score=0.25,
        latency_ms=1.5,
        error=None,
        unit_id="u",
        rollout_id="ro",
        step=1,
        traffic_fraction=0.1,
        features={"a": 1.0, "b": "x", "c": None},
    ),
    OutcomeEvent(model="m", request_id="r", label="yes", kpis={"revenue": 2.0}),
    DecisionEvent(
        model="m",
        rollout_id="ro",
        action=Action.ADVANCE,
        from_state="running:0",
        to_state="running:1",
        traffic_fraction=0.5,
        reason="why",
        evidence={"gates": [{"metric": "accuracy", "verdict": "pass"}]},
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_fast_encoding_equals_the_contract(event: object) -> None:
    assert encode_event(event) == encode(event)  # type: ignore[arg-type]


def test_nan_is_null_in_both() -> None:
    event = OutcomeEvent(model="m", request_id="r", kpis={"revenue": math.nan})
    assert encode_event(event) == encode(event)
    assert b'"kpis":{"revenue":null}' in encode(event)
