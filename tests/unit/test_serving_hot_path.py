"""What the per-request path was made cheaper with keeps its meaning.

- the publisher's encoder (msgspec) writes the event contract's JSON: same values once
  decoded, NaN and infinities as null;
- a shadow copy reaches the challenger only after the request's coroutine is done;
- BentoML matches ``/predict`` before the admin routes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from modelcanary.errors import EventError
from modelcanary.events import (
    Arm,
    Mode,
    OutcomeEvent,
    PredictionEvent,
    decode_prediction,
    encode,
)
from modelcanary.kafka_io import EventPublisher, encode_event
from modelcanary.rollout_store import ModelSnapshot
from modelcanary.router import ModelRouter, ServingSnapshot
from modelcanary.routing import RoutingTable
from modelcanary.spool import MemorySpool
from modelcanary.validation import InputSchema
from tests.conftest import free_port

TRICKY_VALUES: dict[str, Any] = {
    "small": 1.5e-07,
    "tiny": 5e-324,
    "large": 1e22,
    "huge": 1.7976931348623157e308,
    "third": 1 / 3,
    "negative_zero": -0.0,
    "integer": 12345678901234567890123,
    "text": 'é \u2028 "quoted" \\ / \x01',
    "missing": None,
    "flag": True,
    "nested": [1, {"k": 2.5e-9}],
}


def _prediction(features: dict[str, Any]) -> PredictionEvent:
    return PredictionEvent(
        model="m",
        request_id="r",
        version="1",
        arm=Arm.CHAMPION,
        mode=Mode.CANARY,
        served=True,
        prediction=0.1,
        score=0.25,
        latency_ms=0.8123,
        features=features,
    )


def test_the_fast_encoder_writes_the_same_json_values_as_the_contract() -> None:
    event = _prediction(TRICKY_VALUES)
    fast, contract = encode_event(event), encode(event)
    assert json.loads(fast) == json.loads(contract)
    assert list(json.loads(fast)) == list(json.loads(contract))  # same field order


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_written_as_null_by_both_encoders(bad: float) -> None:
    """A NaN feature is a missing optional value: its event must still reach Kafka (it
    was refused, and the request left out of the evidence)."""
    prediction = _prediction({"x": bad, "y": 1.0, "nested": [bad, {"k": bad}]})
    outcome = OutcomeEvent(model="m", request_id="r", kpis={"revenue": bad})
    for event in (prediction, outcome):
        fast, contract = json.loads(encode_event(event)), json.loads(encode(event))
        assert fast == contract
    assert fast["kpis"] == {"revenue": None}
    assert json.loads(encode_event(prediction))["features"] == {
        "x": None,
        "y": 1.0,
        "nested": [None, {"k": None}],
    }


def test_a_nan_feature_is_spooled_as_null_not_dropped() -> None:
    spool = MemorySpool()
    closed_port = free_port()  # nothing listens: the publisher spools
    publisher = EventPublisher(f"127.0.0.1:{closed_port}", spool=spool, require_broker=False)
    try:
        publisher.publish("t", _prediction({"optional": math.nan, "x": 1.0}))
        deadline = time.monotonic() + 5
        while spool.depth < 1:
            assert time.monotonic() < deadline, publisher.stats()
            time.sleep(0.02)
        assert publisher.stats().dropped == 0
        event = decode_prediction(spool.peek(1)[0].value)
        assert event.features == {"optional": None, "x": 1.0}
    finally:
        publisher.close(timeout_s=0.5)


def test_deferred_events_are_encoded_by_the_sender_in_order_and_bad_ones_counted() -> None:
    spool = MemorySpool()
    publisher = EventPublisher(f"127.0.0.1:{free_port()}", spool=spool, require_broker=False)

    def encode(data: Any) -> bytes | None:
        if data == "unencodable":
            return None  # an encoder that says no has logged why
        if data == "bug":
            raise RuntimeError("an encoder's bug")
        return json.dumps({"n": data}).encode()

    try:
        for data in (1, "unencodable", 2, "bug", 3):
            publisher.publish_deferred("t", f"key-{data}", encode, data)
        deadline = time.monotonic() + 5
        while spool.depth < 3:
            assert time.monotonic() < deadline, publisher.stats()
            time.sleep(0.02)
        records = spool.peek(10)
        assert [json.loads(r.value)["n"] for r in records] == [1, 2, 3]
        assert [r.key for r in records] == [b"key-1", b"key-2", b"key-3"]
        assert publisher.stats().dropped == 2
    finally:
        publisher.close(timeout_s=0.5)


def test_what_msgspec_cannot_write_goes_through_the_contract_encoder() -> None:
    event = _prediction({"surrogate": "\ud800", "x": math.nan})  # not encodable as UTF-8
    assert json.loads(encode_event(event)) == json.loads(encode(event))
    assert json.loads(encode_event(event))["features"] == {"surrogate": "\ud800", "x": None}
    with pytest.raises(EventError):
        encode_event(_prediction({"x": object()}))


class _Model:
    def __init__(self, version: str) -> None:
        self.version = version
        self.feature_names = ["x"]
        self.schema = InputSchema.numeric_columns(self.feature_names)
        self.calls = 0

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, float | None]]:
        self.calls += 1
        return [(1, 0.5) for _ in rows]


class _Events:
    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []

    def publish(self, topic: str, event: Any) -> None:
        self.events.append(event)

    def publish_deferred(
        self, topic: str, key: str, encode: Callable[[Any], bytes | None], data: Any
    ) -> None:
        value = encode(data)
        assert value is not None
        self.events.append(decode_prediction(value))


def test_a_shadow_copy_is_handed_over_only_once_the_request_is_answered() -> None:
    champion, challenger, events = _Model("1"), _Model("2"), _Events()
    router = ModelRouter(
        "m",
        "predictions",
        "outcomes",
        events,
        read_snapshot=lambda: ModelSnapshot(None, None, None),
        load_predictor=_Model,
    )
    router.snapshot = ServingSnapshot(champion, challenger, RoutingTable("r1", Mode.SHADOW, 1.0, 0))

    handed_over: list[float] = []
    mirror = router._mirror

    def recording_mirror(*args: Any) -> None:
        handed_over.append(time.monotonic())
        mirror(*args)

    router._mirror = recording_mirror  # type: ignore[method-assign]

    async def request() -> int:
        await router.predict({"x": 1.0}, "req-1")
        return len(handed_over)  # still inside the request's task

    try:
        assert asyncio.run(request()) == 0
        assert len(handed_over) == 1
        deadline = time.monotonic() + 2
        while len(events.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert challenger.calls == 1
        shadow = [e for e in events.events if e.arm is Arm.CHALLENGER]
        assert len(shadow) == 1 and shadow[0].mode is Mode.SHADOW and shadow[0].served is False
    finally:
        router.stop()


def test_predict_is_matched_before_the_admin_routes() -> None:
    from serving.service import ModelcanaryService

    names = list(ModelcanaryService.apis)
    assert names.index("predict") < min(i for i, n in enumerate(names) if n.startswith("rollout_"))


def test_event_ids_are_unique_uuid_text_and_timestamps_rfc3339_utc() -> None:
    import re
    import uuid
    from datetime import UTC, datetime

    from modelcanary.events import new_event_id, utc_now

    seen: set[str] = set()
    for _ in range(2000):
        event_id = new_event_id()
        parsed = uuid.UUID(event_id)
        assert str(parsed) == event_id and parsed.version == 8
        assert parsed.variant == uuid.RFC_4122
        seen.add(event_id)
        before = datetime.now(UTC).timestamp()
        ts = utc_now()
        after = datetime.now(UTC).timestamp()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ts)
        assert before - 1e-6 <= datetime.fromisoformat(ts).timestamp() <= after + 1e-6
    assert len(seen) == 2000


def test_a_forked_child_draws_its_own_event_ids() -> None:
    import os

    from modelcanary.events import new_event_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child continues the counter, under a head drawn anew
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child_id[:19] != new_event_id()[:19]  # the random head (and version nibble)
