"""The serving path's prediction bytes decode to the event the dataclass path makes."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import msgspec
import pytest

from modelcanary.events import Arm, Mode, PredictionEvent, decode_prediction
from modelcanary.kafka_io import encode_event
from modelcanary.prediction_bytes import MAX_HEADS, PendingPrediction, PredictionEncoder
from modelcanary.routing import RoutingTable

TABLES = [
    RoutingTable(),  # no rollout: rollout id, step and fraction are null
    RoutingTable("m-v2-abc", Mode.CANARY, 0.05, 0),
    RoutingTable("m-v2-abc", Mode.SHADOW, 1.0, 2),
]


def _call(**overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "request_id": "req-1", "served": True, "prediction": 1, "score": 0.75,
        "latency_ms": 0.52, "error": None, "unit_id": "user-7",
        "features": {"age": 41.0, "plan": "pro", "n": 3},
    }  # fmt: skip
    call.update(overrides)
    return call


def _pending(version: str, arm: Arm, mode: Mode, table: RoutingTable,
             call: dict[str, Any], ts: float | None = None) -> PendingPrediction:  # fmt: skip
    return (
        version, arm, mode, table, call["request_id"], call["served"], call["prediction"],
        call["score"], call["latency_ms"], call["error"], call["unit_id"], call["features"],
        time.time() if ts is None else ts,
    )  # fmt: skip


def _encode(encoder: PredictionEncoder, version: str, arm: Arm, mode: Mode,
            table: RoutingTable, call: dict[str, Any]) -> bytes | None:  # fmt: skip
    return encoder.encode(_pending(version, arm, mode, table, call))


def _expected(version: str, arm: Arm, mode: Mode, table: RoutingTable,
              call: dict[str, Any], decoded: PredictionEvent) -> PredictionEvent:  # fmt: skip
    rollout_id = table.rollout_id
    return PredictionEvent(
        model="churn",
        version=version,
        arm=arm,
        mode=mode,
        rollout_id=rollout_id,
        step=table.step,
        traffic_fraction=table.traffic_fraction if rollout_id is not None else None,
        **call,
        event_id=decoded.event_id,
        ts=decoded.ts,
    )


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("arm", list(Arm))
def test_the_bytes_decode_to_the_event_the_dataclass_path_makes(
    table: RoutingTable, arm: Arm
) -> None:
    encoder = PredictionEncoder("churn")
    for call in (
        _call(),
        _call(served=False, prediction=None, score=None, error="timeout after 200 ms"),
        _call(unit_id=None, features=None, prediction="yes", score=None),
        _call(request_id="r-é-😀", features={"ville": "Zürich"}),
    ):
        value = _encode(encoder, "2", arm, table.mode, table, call)
        assert value is not None
        decoded = decode_prediction(value)
        expected = _expected("2", arm, table.mode, table, call, decoded)
        assert decoded == expected
        # the same JSON object as the dataclass path's, keys in another order
        assert msgspec.json.decode(value) == msgspec.json.decode(encode_event(expected))


def test_each_call_gets_its_own_event_id_and_timestamp() -> None:
    encoder = PredictionEncoder("churn")
    values = [
        _encode(encoder, "1", Arm.CHAMPION, Mode.CANARY, TABLES[1], _call()) for _ in range(3)
    ]
    ids = {decode_prediction(v).event_id for v in values if v is not None}
    assert len(ids) == 3


def test_a_new_table_gets_a_new_head_even_for_the_same_version() -> None:
    encoder = PredictionEncoder("churn")
    step0 = RoutingTable("ro", Mode.CANARY, 0.05, 0)
    step1 = RoutingTable("ro", Mode.CANARY, 0.25, 1)
    for table in (step0, step1, step0):
        value = _encode(encoder, "2", Arm.CHALLENGER, Mode.CANARY, table, _call())
        assert value is not None
        event = decode_prediction(value)
        assert (event.step, event.traffic_fraction) == (table.step, table.traffic_fraction)


def test_heads_of_many_versions_are_not_kept_forever() -> None:
    encoder = PredictionEncoder("churn")
    for version in range(MAX_HEADS * 3):
        value = _encode(encoder, str(version), Arm.CHAMPION, Mode.CANARY, TABLES[0], _call())
        assert value is not None and decode_prediction(value).version == str(version)
    assert len(encoder._heads) <= MAX_HEADS


def test_a_score_that_is_not_finite_is_written_as_null() -> None:
    encoder = PredictionEncoder("churn")
    for score in (math.nan, math.inf):
        value = _encode(encoder, "1", Arm.CHAMPION, Mode.CANARY, TABLES[1], _call(score=score))
        assert value is not None and decode_prediction(value).score is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"prediction": object()},  # not a JSON value
        {"features": {"x": object()}},
        {"request_id": "lone \ud800 surrogate"},  # not encodable as UTF-8
    ],
)
def test_what_msgspec_refuses_is_left_to_the_slow_path(
    overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = PredictionEncoder("churn")
    slow: list[PendingPrediction] = []
    monkeypatch.setattr(encoder, "_encode_event", lambda pending: slow.append(pending))
    pending = _pending("1", Arm.CHAMPION, Mode.CANARY, TABLES[1], _call(**overrides))
    assert encoder.encode(pending) is None
    assert slow == [pending]


def test_the_slow_path_writes_what_the_json_module_can() -> None:
    encoder = PredictionEncoder("churn")
    value = _encode(encoder, "1", Arm.CHAMPION, Mode.CANARY, TABLES[1], _call(prediction="\ud800"))
    assert value is not None
    written = json.loads(value)
    assert (written["prediction"], written["request_id"], written["version"]) == (
        "\ud800",
        "req-1",
        "1",
    )


def test_an_event_that_is_not_json_at_all_is_dropped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    encoder = PredictionEncoder("churn")
    with caplog.at_level(logging.ERROR):
        value = _encode(encoder, "1", Arm.CHAMPION, Mode.CANARY, TABLES[1], _call(score=object()))
    assert value is None
    assert "dropping the prediction event of request 'req-1'" in caplog.text


def test_the_timestamp_is_the_call_s_not_the_encoding_s() -> None:
    encoder = PredictionEncoder("churn")
    expected = "2001-09-09T01:46:40.250000Z"
    for prediction in (1, "\ud800"):  # the fast path, and the slow one
        call = _call(prediction=prediction)
        pending = _pending("1", Arm.CHAMPION, Mode.CANARY, TABLES[1], call, ts=1_000_000_000.25)
        value = encoder.encode(pending)
        assert value is not None and json.loads(value)["ts"] == expected
