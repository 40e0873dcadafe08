import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcanary.errors import EventError
from modelcanary.events import (
    Action,
    Arm,
    DeadLetterEvent,
    DecisionEvent,
    Mode,
    OutcomeEvent,
    PredictionEvent,
    decode_decision,
    decode_outcome,
    decode_prediction,
    encode,
)


def prediction(**changes: object) -> PredictionEvent:
    values = dict(
        model="m",
        request_id="r1",
        version="2",
        arm=Arm.CHALLENGER,
        mode=Mode.CANARY,
        served=True,
        prediction=1,
        score=0.8,
        latency_ms=1.5,
        unit_id="u",
        rollout_id="ro",
        step=0,
        traffic_fraction=0.05,
        features={"a": 1.0},
    )
    values.update(changes)
    return PredictionEvent(**values)  # type: ignore[arg-type]


def test_round_trips() -> None:
    p = prediction()
    assert decode_prediction(encode(p)) == p
    o = OutcomeEvent(model="m", request_id="r1", label=1, kpis={"revenue": 3.5})
    assert decode_outcome(encode(o)) == o
    d = DecisionEvent(
        model="m",
        rollout_id="ro",
        action=Action.ROLLBACK,
        from_state="running:0",
        to_state="rolled_back",
        traffic_fraction=0.0,
        reason="accuracy fell",
        evidence={"gates": []},
    )
    assert decode_decision(encode(d)) == d
    assert p.key == "r1" and o.key == "r1" and d.key == "m"


def test_every_event_carries_the_common_fields() -> None:
    obj = json.loads(encode(prediction()))
    assert {"event_id", "schema_version", "ts", "model"} <= obj.keys()
    assert obj["schema_version"] == 1 and obj["ts"].endswith("Z")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "JSON object"),
        (json.dumps({"schema_version": 99}).encode(), "unknown schema_version"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_poison_gives_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        decode_prediction(raw)


def test_missing_and_mistyped_fields_are_named() -> None:
    obj = json.loads(encode(prediction()))
    del obj["request_id"]
    with pytest.raises(EventError, match="request_id"):
        decode_prediction(json.dumps(obj).encode())
    obj = json.loads(encode(prediction()))
    obj["served"] = "yes"
    with pytest.raises(EventError, match="served"):
        decode_prediction(json.dumps(obj).encode())
    obj = json.loads(encode(prediction()))
    obj["arm"] = "baseline"
    with pytest.raises(EventError, match="champion, challenger"):
        decode_prediction(json.dumps(obj).encode())


def test_non_finite_numbers_are_written_as_null_and_bad_kpis_refused() -> None:
    encoded = encode(prediction(score=float("nan")))
    assert json.loads(encoded)["score"] is None
    assert decode_prediction(encoded).score is None
    obj = json.loads(encode(OutcomeEvent(model="m", request_id="r", kpis={"x": 1.0})))
    obj["kpis"]["x"] = "lots"
    with pytest.raises(EventError, match="kpi"):
        decode_outcome(json.dumps(obj).encode())


def test_dead_letter_keeps_original_key_and_bytes() -> None:
    letter = DeadLetterEvent.wrap("modelcanary.predictions", b"\x00junk", "not JSON", b"req-7")
    assert letter.key == "req-7"
    assert json.loads(encode(letter))["payload"] == "AGp1bms="


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_raises_only_event_error(raw: bytes) -> None:
    for decode in (decode_prediction, decode_outcome, decode_decision):
        with contextlib.suppress(EventError):
            decode(raw)
