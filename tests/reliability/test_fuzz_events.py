"""Hypothesis on event deserialization: whatever the bytes, decoding returns an event or
raises :class:`EventError` (the reason a dead letter carries), and does so quickly.

``decode_prediction``, ``decode_outcome``, ``decode_decision`` and
``modelcanary.snapshot.decode_snapshot`` get arbitrary bytes, arbitrary JSON, and valid
events with fields removed or replaced by arbitrary JSON values. Inputs Hypothesis is
unlikely to build (numbers beyond float range, very deep nesting) are tried directly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcanary.errors import EventError
from modelcanary.events import (
    Action,
    Arm,
    DecisionEvent,
    Mode,
    OutcomeEvent,
    PredictionEvent,
    decode_decision,
    decode_outcome,
    decode_prediction,
    to_dict,
)
from modelcanary.snapshot import MAGIC, Snapshot, decode_snapshot, encode_snapshot

pytestmark = pytest.mark.reliability

#: A decode slower than this on a small input counts as a hang.
MAX_DECODE_S = 0.5
KEY = b"state-key"

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "prediction": decode_prediction,
    "outcome": decode_outcome,
    "decision": decode_decision,
}
VALID: dict[str, dict[str, Any]] = {
    "prediction": to_dict(PredictionEvent(
        model="m", request_id="r1", version="2", arm=Arm.CHALLENGER, mode=Mode.SHADOW,
        served=False, prediction=1, score=0.8, latency_ms=3.5, error=None, unit_id="u1",
        rollout_id="ro", step=1, traffic_fraction=0.25, features={"a": 1.0, "b": "x"},
    )),
    "outcome": to_dict(OutcomeEvent(model="m", request_id="r1", label=1,
                                    kpis={"converted": 1.0, "revenue": 9.5})),
    "decision": to_dict(DecisionEvent(
        model="m", rollout_id="ro", action=Action.ADVANCE, from_state="running:0",
        to_state="running:1", traffic_fraction=0.25, reason="every gate passed",
        evidence={"gates": [{"gate": "accuracy", "verdict": "pass"}]},
    )),
}  # fmt: skip
FIELDS = sorted({name for event in VALID.values() for name in event})

settings_ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values of every kind; integers stay within float range (beyond it: see below).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**1000), max_value=2**1000)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
DELETE = object()


def _decodes_or_refuses(decode: Callable[[bytes], Any], raw: bytes) -> Any:
    """Decode ``raw``; only :class:`EventError` may come out, and quickly."""
    started = time.perf_counter()
    try:
        return decode(raw)
    except EventError as exc:
        assert str(exc), "an EventError without a reason"
        return None
    finally:
        elapsed = time.perf_counter() - started
        assert elapsed < MAX_DECODE_S, f"decoding {len(raw)} bytes took {elapsed:.2f} s"


@pytest.mark.parametrize("kind", sorted(DECODERS))
@settings_
@given(raw=st.binary(max_size=3000))
def test_arbitrary_bytes(kind: str, raw: bytes) -> None:
    _decodes_or_refuses(DECODERS[kind], raw)


@pytest.mark.parametrize("kind", sorted(DECODERS))
@settings_
@given(value=json_values)
def test_arbitrary_json(kind: str, value: Any) -> None:
    _decodes_or_refuses(DECODERS[kind], json.dumps(value).encode())


@pytest.mark.parametrize("kind", sorted(DECODERS))
@settings_
@given(
    changes=st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]), st.just(DELETE) | json_values, max_size=4
    ),
    keep_version=st.booleans(),
)
def test_valid_events_with_fields_removed_or_replaced(
    kind: str, changes: dict[str, Any], keep_version: bool
) -> None:
    event = dict(VALID[kind])
    for name, value in changes.items():
        if value is DELETE:
            event.pop(name, None)
        else:
            event[name] = value
    if keep_version:
        event["schema_version"] = 1
    decoded = _decodes_or_refuses(DECODERS[kind], json.dumps(event).encode())
    if decoded is not None:
        assert decoded.schema_version == 1


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_valid_events_decode(kind: str) -> None:
    assert _decodes_or_refuses(DECODERS[kind], json.dumps(VALID[kind]).encode()) is not None


# -- snapshots ----------------------------------------------------------------------------
@settings_
@given(raw=st.binary(max_size=3000))
def test_arbitrary_bytes_are_not_a_snapshot(raw: bytes) -> None:
    with pytest.raises(EventError):
        decode_snapshot(raw, KEY)


@settings_
@given(body=st.binary(max_size=3000))
def test_unsigned_snapshots_are_refused_before_unpickling(body: bytes) -> None:
    with pytest.raises(EventError):
        decode_snapshot(MAGIC + body, KEY)


@settings_
@given(flip=st.integers(min_value=len(MAGIC), max_value=200))
def test_a_tampered_snapshot_is_refused(flip: int) -> None:
    raw = bytearray(encode_snapshot(Snapshot(0, {"t": 5}, {"t": 3}), KEY))
    index = flip % len(raw)
    raw[index] ^= 0xFF
    with pytest.raises(EventError):
        decode_snapshot(bytes(raw), KEY)


def test_a_snapshot_signed_with_another_key_is_refused() -> None:
    raw = encode_snapshot(Snapshot(0, {"t": 5}, {"t": 3}), b"another key")
    with pytest.raises(EventError, match="does not verify"):
        decode_snapshot(raw, KEY)


# -- inputs Hypothesis does not build ------------------------------------------------------
HUGE = "1" + "0" * 400  # a JSON integer beyond float range (json.loads makes it an int)
NUMERIC_FIELD = {"prediction": "latency_ms", "outcome": "kpis", "decision": "traffic_fraction"}


def _with_literal(kind: str, name: str, literal: str) -> bytes:
    text = json.dumps({**VALID[kind], name: "@@"})
    return text.replace('"@@"', literal).encode()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b" " * 900_000, id="whitespace"),
        pytest.param(b"1" * 900_000, id="a 900k-digit number"),
        pytest.param(b'"' + b"\\u0000" * 150_000 + b'"', id="escapes"),
        pytest.param(b"{" + b'"a":1,' * 100_000 + b'"b":2}', id="many keys"),
        pytest.param(b"x" * 1_000_001, id="over the size limit"),
    ],
)
@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_large_inputs_are_refused_quickly(kind: str, raw: bytes) -> None:
    _decodes_or_refuses(DECODERS[kind], raw)


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_integers_beyond_float_range_are_refused(kind: str) -> None:
    literal = f'{{"revenue": {HUGE}}}' if kind == "outcome" else HUGE
    _decodes_or_refuses(DECODERS[kind], _with_literal(kind, NUMERIC_FIELD[kind], literal))


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_deeply_nested_json_is_refused(kind: str) -> None:
    _decodes_or_refuses(DECODERS[kind], b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "1e999"])
def test_a_decision_with_a_non_finite_traffic_fraction_is_refused(literal: str) -> None:
    decoded = _decodes_or_refuses(
        decode_decision, _with_literal("decision", "traffic_fraction", literal)
    )
    assert decoded is None or math.isfinite(decoded.traffic_fraction)
