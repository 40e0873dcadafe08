"""The fast decoders of predictions and outcomes agree with the checked ones.

``decode_prediction`` / ``decode_outcome`` take a msgspec fast path and hand anything it
does not accept to ``_decode_*_checked``. Whatever the fast path accepts must decode to
exactly what the checked path gives (same values, same types: ``1`` is not ``1.0`` is
not ``True``), and whatever the checked path refuses the fast path must refuse too.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcanary import events
from modelcanary.errors import EventError
from modelcanary.events import (
    Arm,
    Mode,
    OutcomeEvent,
    PredictionEvent,
    _decode_outcome_checked,
    _decode_prediction_checked,
    decode_outcome,
    decode_prediction,
    encode,
    read_outcome,
    read_prediction,
    to_dict,
)

PAIRS = {
    "prediction": (decode_prediction, _decode_prediction_checked),
    "outcome": (decode_outcome, _decode_outcome_checked),
}
READERS = {"prediction": read_prediction, "outcome": read_outcome}
VALID: dict[str, dict[str, Any]] = {
    "prediction": to_dict(PredictionEvent(
        model="m", request_id="r1", version="2", arm=Arm.CHALLENGER, mode=Mode.SHADOW,
        served=False, prediction=1, score=0.8, latency_ms=3.5, error=None, unit_id="u1",
        rollout_id="ro", step=1, traffic_fraction=0.25, features={"a": 1.0, "b": "x"},
    )),
    "outcome": to_dict(OutcomeEvent(model="m", request_id="r1", label=1,
                                    kpis={"converted": 1.0, "revenue": 9.5})),
}  # fmt: skip
FIELDS = sorted({name for event in VALID.values() for name in event})
DELETE = object()

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


def _typed(event: Any) -> str:
    """repr of the event and of each field's type: tells 1, 1.0, True and -0.0 apart."""
    return repr(event) + repr([type(getattr(event, f.name)) for f in dataclasses.fields(event)])


def _typed_fields(fields: Any, event: Any) -> str:
    """:func:`_typed` of ``fields`` read as an event of ``event``'s class."""
    names = [f.name for f in dataclasses.fields(event)]
    copy = type(event)(**{name: getattr(fields, name) for name in names})
    return repr(copy) + repr([type(getattr(fields, name)) for name in names])


def assert_agree(kind: str, raw: bytes) -> Any:
    fast, checked = PAIRS[kind]
    try:
        expected = checked(raw)
    except EventError as exc:
        for decoder in (fast, READERS[kind]):
            with pytest.raises(EventError) as got:
                decoder(raw)
            assert str(got.value) == str(exc)
        return None
    # What the evaluator reads (a wire struct or the event) has the event's fields.
    fields = READERS[kind](raw)
    assert _typed_fields(fields, expected) == _typed(expected)
    decoded = fast(raw)
    assert type(decoded) is type(expected)
    assert _typed(decoded) == _typed(expected)
    assert decoded == expected and hash(decoded.key) == hash(expected.key)
    return decoded


@pytest.mark.parametrize("kind", sorted(PAIRS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]), st.just(DELETE) | json_values, max_size=4
    ),
    keep_version=st.booleans(),
)
def test_fast_and_checked_decoders_agree(
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
    assert_agree(kind, json.dumps(event).encode())


def _with(kind: str, name: str, literal: str) -> bytes:
    return json.dumps({**VALID[kind], name: "@@"}).replace('"@@"', literal).encode()


LITERALS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, str(2**1000), str(2**64),
    str(-(2**63) - 1), "-0", "-0.0", "0", "1.0", "true", "false", "null", '"\\ud800"', '"a\\u0000"',
    "4.35e-320", "0.1e-400", "[]", "{}", '{"a": 1, "a": 2}', '{"x": true}', '{"x": 1e999}',
    '{"x": ' + str(2**70) + "}", '"champion"', '"challenger"', '"shadow"', '"2"', "7",
    "1" * 4300, "1" * 4301, '{"x": ' + "9" * 4301 + "}",  # Python's int-from-text limit: 4300
]  # fmt: skip


@pytest.mark.parametrize("literal", LITERALS)
@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_every_field_with_unusual_literals(kind: str, literal: str) -> None:
    for name in [*VALID[kind], "extra"]:
        assert_agree(kind, _with(kind, name, literal))


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_unusual_documents(kind: str) -> None:
    text = json.dumps(VALID[kind])
    body = text[1:-1]
    for raw in [
        text.encode("utf-16"),  # json.loads detects UTF-16/32; msgspec reads UTF-8 only
        text.encode("utf-32"),
        b"\xef\xbb\xbf" + text.encode(),  # a UTF-8 byte-order mark
        ("{" + body + "," + body + "}").encode(),  # every key twice
        ('{"schema_version": 2,' + body + "}").encode(),  # duplicate keys: the last one wins
        ("{" + body + ',"schema_version": 2}').encode(),
        ("{" + body + ',"model": 5}').encode(),
        ('{"model": 5,' + body + "}").encode(),
        ("  " + text + "\n").encode(),
        (text + "x").encode(),
        text.encode()[:-1],
        b"",
        b"null",
        b"[]",
        text.replace('"m"', '"\\u00e9\\ud83d\\ude00"').encode(),
        text.replace('"m"', '"\xe9"').encode("utf-8"),
        text.replace('"m"', '"\xe9"').encode("latin-1"),
        ("{" + body + ',"extra": "\xff"}').encode("latin-1"),  # invalid UTF-8, unknown field
        ("{" + body + ',"extra": ' + "1" * 4301 + "}").encode(),
        ("{" + body + ',"extra": {"a": [1, "\\ud800", null]}}').encode(),
    ]:
        assert_agree(kind, raw)


def test_the_fast_path_takes_ordinary_events(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(raw: bytes) -> None:
        raise AssertionError(f"the checked path was asked to decode {raw!r}")

    prediction = PredictionEvent(
        model="m", request_id="r", version="1", arm=Arm.CHAMPION, mode=Mode.CANARY, served=True,
        prediction=[1, 2], score=None, latency_ms=2, features={"f": 1.5, "g": None},
    )  # fmt: skip
    outcome = OutcomeEvent(model="m", request_id="r", label="cat", kpis={"revenue": 3})
    assert assert_agree("prediction", encode(prediction)) == prediction
    assert assert_agree("outcome", encode(outcome)) == outcome
    monkeypatch.setattr(events, "_decode_prediction_checked", refuse)
    monkeypatch.setattr(events, "_decode_outcome_checked", refuse)
    assert decode_prediction(encode(prediction)) == prediction
    assert decode_outcome(encode(outcome)) == outcome


def test_without_features_keeps_everything_else() -> None:
    event = decode_prediction(encode(PredictionEvent(
        model="m", request_id="r", version="1", arm=Arm.CHAMPION, mode=Mode.CANARY, served=True,
        prediction=1, features={"f": 1.0},
    )))  # fmt: skip
    stripped = event.without_features()
    assert stripped.features is None and event.features == {"f": 1.0}
    assert to_dict(stripped) == {**to_dict(event), "features": None}
    assert stripped.without_features() is stripped
