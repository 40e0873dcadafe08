"""Event contract, schema version 1: predictions, outcomes, decisions, dead letters.

Every event is a JSON object with ``event_id`` (UUID, the idempotency key),
``schema_version``, ``ts`` (RFC 3339, UTC) and ``model``. Predictions and outcomes are
keyed by ``request_id``, decisions by ``model``, dead letters by the original key.
Fields may be added within a schema version; renaming or removing one is a new version.

``decode_*`` functions raise :class:`~modelcanary.errors.EventError` with a reason a
dead-letter record can carry; they never raise anything else on bad bytes.

Predictions and outcomes are what the evaluator reads by the million, so their decoders
have a fast path: msgspec parses and type-checks the bytes against a wire schema in C
(:class:`PredictionWire`, :class:`OutcomeWire`) and the event is assembled from the
checked fields without going through the frozen dataclass's ``__init__``; the evaluator
reads the checked wire struct itself (``read_*``: the same attributes, no event built).
The fast path only ever *accepts*: anything it does not take (bad JSON, a wrong type, a
``schema_version`` other than 1, NaN or infinity, a field it does not know, a
duplicated key with a bad value, UTF-16 input...) goes to the checked path
(``_decode_*_checked``), which decides and gives the reason. The two agree on every
input the fast path accepts (``tests/unit/test_event_decode_fast.py``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import os
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from os import urandom as _urandom
from time import time as _time
from typing import Annotated, Any, Literal

import msgspec

from modelcanary.errors import EventError

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 1_000_000


class Arm(StrEnum):
    """The two arms of a rollout, named after the MLflow aliases."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"

    # Enum's __hash__ is a Python function (hash of the name); the evaluator hashes arms
    # and modes in dictionary keys several times per event. The str hash is C, and agrees
    # with ``==`` (``Arm.CHAMPION == "champion"``), which Enum's did not.
    __hash__ = str.__hash__


class Mode(StrEnum):
    """Canary: the challenger answers a fraction of users. Shadow: it answers a mirrored copy."""

    CANARY = "canary"
    SHADOW = "shadow"

    __hash__ = str.__hash__  # see Arm


class Action(StrEnum):
    """What a decision asks the controller to do.

    The judge decides advance, promote, rollback, hold and halt; an operator may also
    decide pause, resume, approve (a manual gate), set_traffic, promote, rollback, abort.
    """

    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    HOLD = "hold"
    HALT = "halt"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"
    SET_TRAFFIC = "set_traffic"


def utc_now() -> str:
    """Now as RFC 3339 UTC with microseconds: ``2026-11-26T20:21:41.123456Z``."""
    return utc_text(_time())


def utc_text(now: float) -> str:
    """``now`` (seconds since the epoch) as RFC 3339 UTC with microseconds.

    Every served request makes an event, so the date and time up to the second are
    formatted once per second (a third of the cost of ``datetime.isoformat`` each time).
    """
    second = int(now)
    formatted, text = _SECOND[0]
    if formatted != second:  # one tuple, replaced whole: threads never see half of it
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _SECOND[0] = (second, text)
    # Six digits without a format spec (int.__format__ parses its spec on every call: ~1.5 k
    # instructions, a third of the sender's cost of an event id and a timestamp).
    return f"{text}{str(1_000_000 + int((now - second) * 1_000_000))[1:]}Z"


_SECOND: list[tuple[int, str]] = [(-1, "")]  # (the epoch second formatted, its text)


def new_event_id() -> str:
    """A unique id as UUID text: RFC 9562 version 8, i.e. 60 bits drawn at random once
    per process followed by a 60-bit counter.

    Serving makes an id for every event; a random (version 4) UUID costs a system call
    each, twice the cost of this. Ids of different processes differ unless two of them
    draw the same 60 bits (a one in 10^18 chance per pair); a forked child draws anew.
    """
    count = next(_EVENT_COUNTER)
    # 16 hex digits, the first an 8 (the RFC 9562 variant, binary 10, then 00): hex()
    # instead of format specs (see utc_text)
    digits = hex(_VARIANT_BITS | (count & _LOW_60))
    return f"{_EVENT_ID_HEAD[0]}{digits[2:6]}-{digits[6:]}"


def _draw_event_id_head() -> None:
    h = _urandom(8).hex()
    _EVENT_ID_HEAD[0] = f"{h[:8]}-{h[8:12]}-8{h[13:16]}-"  # version 8


_EVENT_ID_HEAD = [""]
_EVENT_COUNTER = itertools.count()
_LOW_60 = (1 << 60) - 1
_VARIANT_BITS = 0x8 << 60
_draw_event_id_head()
os.register_at_fork(after_in_child=_draw_event_id_head)


@dataclass(frozen=True)
class PredictionEvent:
    """One model call: who answered, what it answered, how fast, whether the user saw it."""

    model: str
    request_id: str
    version: str
    arm: Arm
    mode: Mode
    served: bool
    prediction: Any
    score: float | None = None
    latency_ms: float = 0.0
    error: str | None = None
    unit_id: str | None = None
    rollout_id: str | None = None
    step: int | None = None
    traffic_fraction: float | None = None
    features: dict[str, Any] | None = None
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return self.request_id

    def without_features(self) -> PredictionEvent:
        """This event with ``features=None`` (a join keeps predictions, not their inputs)."""
        if self.features is None:
            return self
        values = dict(self.__dict__)
        values["features"] = None
        return _assemble(PredictionEvent, values)


@dataclass(frozen=True)
class OutcomeEvent:
    """What happened after a prediction: the true label and/or business KPIs."""

    model: str
    request_id: str
    label: Any = None
    kpis: dict[str, float] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return self.request_id


@dataclass(frozen=True)
class DecisionEvent:
    """A judge's decision about a rollout, with the evidence that led to it."""

    model: str
    rollout_id: str
    action: Action
    from_state: str
    to_state: str
    traffic_fraction: float
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return self.model


#: The most of a refused record's value a dead letter carries (the rest is cut off):
#: base64 makes it 4/3 larger, and a dead letter must stay under the producer's 1 MB
#: record limit (librdkafka's ``message.max.bytes``) whatever it refers to.
DEAD_LETTER_PAYLOAD_BYTES = 512 * 1024
#: The most characters of a reason or an original key a dead letter carries.
DEAD_LETTER_TEXT_CHARS = 1_000
_DEAD_LETTER_IDS = uuid.UUID("5ec60ad8-2b96-47bb-9bdf-cb146482eab7")


@dataclass(frozen=True)
class DeadLetterEvent:
    """A record a consumer could not use: why, where it was, and its bytes.

    ``payload`` is the record's value, base64-encoded. A value over
    :data:`DEAD_LETTER_PAYLOAD_BYTES` is cut there and ``payload_truncated`` is true;
    ``payload_size`` and ``payload_sha256`` always describe the whole value. ``reason``
    and ``original_key`` are cut to :data:`DEAD_LETTER_TEXT_CHARS` characters. So a dead
    letter always fits in a Kafka record, however large the record it refers to.

    Made with the record's partition and offset, its ``event_id`` is derived from the
    record (topic, partition, offset and payload hash) instead of random: a consumer that
    reads the same record again (the judge re-reads the state topic from its beginning
    when it restarts) publishes the same dead letter, which readers deduplicate by id.
    """

    model: str
    source_topic: str
    reason: str
    payload: str
    original_key: str | None = None
    payload_size: int = 0
    payload_sha256: str = ""
    payload_truncated: bool = False
    source_partition: int | None = None
    source_offset: int | None = None
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return self.original_key if self.original_key is not None else self.source_topic

    @classmethod
    def wrap(
        cls,
        source_topic: str,
        raw: bytes,
        reason: str,
        key: bytes | None = None,
        model: str = "",
        *,
        partition: int | None = None,
        offset: int | None = None,
    ) -> DeadLetterEvent:
        """The dead letter of record ``raw`` (its value), refused for ``reason``."""
        digest = hashlib.sha256(raw).hexdigest()
        kept = raw[:DEAD_LETTER_PAYLOAD_BYTES]
        event_id = (
            str(uuid.uuid5(_DEAD_LETTER_IDS, f"{source_topic}/{partition}/{offset}/{digest}"))
            if partition is not None and offset is not None
            else new_event_id()
        )
        return cls(
            model=model,
            source_topic=source_topic,
            reason=reason[:DEAD_LETTER_TEXT_CHARS],
            payload=base64.b64encode(kept).decode("ascii"),
            original_key=(
                None if key is None else key.decode("utf-8", "replace")[:DEAD_LETTER_TEXT_CHARS]
            ),
            payload_size=len(raw),
            payload_sha256=digest,
            payload_truncated=len(kept) < len(raw),
            source_partition=partition,
            source_offset=offset,
            event_id=event_id,
        )


Event = PredictionEvent | OutcomeEvent | DecisionEvent | DeadLetterEvent


def to_dict(event: Event) -> dict[str, Any]:
    return asdict(event)


def encode(event: Event) -> bytes:
    """Serialise an event to compact JSON (ASCII, non-ASCII escaped).

    JSON has no NaN or infinities: they are written as null. A NaN feature is how a
    request says an optional value is missing (the signature allows it), and refusing to
    encode its event would leave that request out of the evidence without a trace.
    """
    fields = to_dict(event)
    try:
        try:
            return _json_bytes(fields)
        except ValueError:  # a non-finite float (anything else fails again below)
            return _json_bytes(_non_finite_as_null(fields))
    except (TypeError, ValueError) as exc:
        raise EventError(f"{type(event).__name__} is not JSON-serialisable: {exc}") from exc


def _json_bytes(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":"), allow_nan=False).encode()


def _non_finite_as_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _non_finite_as_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_non_finite_as_null(v) for v in value]
    return value


def _load(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise EventError("a record without a value (tombstone) is not an event")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"event of {len(raw)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventError(f"not JSON: {exc}") from exc
    except RecursionError as exc:
        raise EventError("not JSON we accept: nested too deeply") from exc
    if not isinstance(obj, dict):
        raise EventError(f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EventError(
            f"unknown schema_version {version!r} (this consumer reads {SCHEMA_VERSION})"
        )
    return obj


def _require(obj: dict[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    if name not in obj:
        raise EventError(f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        raise EventError(f"field {name!r} has type {type(value).__name__}")
    return value


def _optional(obj: dict[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        raise EventError(f"field {name!r} has type {type(value).__name__}")
    return value


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _common(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": _require(obj, "event_id", str),
        "ts": _require(obj, "ts", str),
        "model": _require(obj, "model", str),
        "schema_version": SCHEMA_VERSION,
    }


def _finite(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except OverflowError as exc:
        raise EventError(f"field {name!r} is beyond the range of a float") from exc
    if not math.isfinite(number):
        raise EventError(f"field {name!r} is not a finite number")
    return number


def _enum(enum: type[StrEnum], obj: dict[str, Any], name: str) -> Any:
    raw = _require(obj, name, str)
    try:
        return enum(raw)
    except ValueError as exc:
        allowed = ", ".join(m.value for m in enum)  # type: ignore[attr-defined]
        raise EventError(f"field {name!r}: {raw!r} is not one of {allowed}") from exc


# -- the fast path of predictions and outcomes -----------------------------------------
def _assemble(cls: type[Any], values: dict[str, Any]) -> Any:
    """An instance of the frozen dataclass ``cls`` whose ``__dict__`` is ``values``.

    ``values`` must hold every field of ``cls``, checked. This skips the generated
    ``__init__``, which sets each field through ``object.__setattr__`` and costs several
    times the whole decode. (It relies on the event classes keeping a ``__dict__``: no
    ``slots=True`` on them.)
    """
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", values)
    return event


#: A finite float, checked by msgspec in C. (msgspec refuses a JSON number beyond a
#: double's range anyway, and JSON has no NaN; the bounds make the guarantee explicit.)
_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


class PredictionWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A prediction as the wire must carry it: required fields have no default.

    What :func:`read_prediction` returns when the fast path takes the bytes: the same
    attributes as :class:`PredictionEvent`, checked and normalised the same way;
    read-only by convention. Unknown fields are refused here (so go to the checked
    path, which ignores them): msgspec would skip their values without the checks
    ``json.loads`` makes (UTF-8, integers of more than 4300 digits), and the two paths
    must agree. Not tracked by the garbage collector (``gc=False``): decoded JSON holds
    no reference cycles.
    """

    event_id: str
    ts: str
    model: str
    schema_version: Literal[1]  # SCHEMA_VERSION
    request_id: str
    version: str | int
    arm: Arm
    mode: Mode
    served: bool
    latency_ms: _Finite
    prediction: Any = None
    score: _Finite | None = None
    error: str | None = None
    unit_id: str | None = None
    rollout_id: str | None = None
    step: int | None = None
    traffic_fraction: _Finite | None = None
    features: dict[str, Any] | None = None

    def without_features(self) -> PredictionWire:
        """A copy with ``features=None``, like :meth:`PredictionEvent.without_features`."""
        return self if self.features is None else _replace(self, features=None)


class OutcomeWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An outcome as the wire must carry it: what :func:`read_outcome` returns when the
    fast path takes the bytes (see :class:`PredictionWire`). An explicit ``"kpis":
    null`` goes to the checked path, which reads it as no KPIs."""

    event_id: str
    ts: str
    model: str
    schema_version: Literal[1]  # SCHEMA_VERSION
    request_id: str
    label: Any = None
    kpis: dict[str, _Finite] = {}


#: A prediction as :func:`read_prediction` gives it: either has every field of the event.
PredictionFields = PredictionEvent | PredictionWire
#: An outcome as :func:`read_outcome` gives it.
OutcomeFields = OutcomeEvent | OutcomeWire

_PREDICTION_WIRE = msgspec.json.Decoder(PredictionWire)
_OUTCOME_WIRE = msgspec.json.Decoder(OutcomeWire)
_asdict = msgspec.structs.asdict
_replace = msgspec.structs.replace


def read_prediction(raw: bytes) -> PredictionFields:
    """:func:`decode_prediction` for readers that only read the fields (the evaluator):
    the checked, normalised :class:`PredictionWire` when the fast path takes the bytes,
    without building the event from it; the checked path's event otherwise."""
    if type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES:
        try:
            wire = _PREDICTION_WIRE.decode(raw)
        except Exception:  # anything the fast path does not take: the checked path decides
            return _decode_prediction_checked(raw)
        if type(wire.version) is int:
            wire.version = str(wire.version)
        if not wire.latency_ms:
            wire.latency_ms = 0.0  # -0.0 -> 0.0, as the checked path
        return wire
    return _decode_prediction_checked(raw)


def read_outcome(raw: bytes) -> OutcomeFields:
    """:func:`decode_outcome` for readers that only read the fields (see
    :func:`read_prediction`)."""
    if type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES:
        try:
            return _OUTCOME_WIRE.decode(raw)  # type: ignore[no-any-return]
        except Exception:  # anything the fast path does not take: the checked path decides
            pass
    return _decode_outcome_checked(raw)


def decode_prediction(raw: bytes) -> PredictionEvent:
    fields = read_prediction(raw)
    if type(fields) is PredictionEvent:
        return fields
    return _assemble(PredictionEvent, _asdict(fields))  # type: ignore[no-any-return]


def decode_outcome(raw: bytes) -> OutcomeEvent:
    fields = read_outcome(raw)
    if type(fields) is OutcomeEvent:
        return fields
    return _assemble(OutcomeEvent, _asdict(fields))  # type: ignore[no-any-return]


# -- the checked path: every event kind, every reason ----------------------------------
def _decode_prediction_checked(raw: bytes) -> PredictionEvent:
    obj = _load(raw)
    features = _optional(obj, "features", dict)
    return PredictionEvent(
        **_common(obj),
        request_id=_require(obj, "request_id", str),
        version=str(_require(obj, "version", (str, int))),
        arm=_enum(Arm, obj, "arm"),
        mode=_enum(Mode, obj, "mode"),
        served=_require(obj, "served", bool),
        prediction=obj.get("prediction"),
        score=_finite("score", _optional(obj, "score", (int, float))),
        latency_ms=_finite("latency_ms", _require(obj, "latency_ms", (int, float))) or 0.0,
        error=_optional(obj, "error", str),
        unit_id=_optional(obj, "unit_id", str),
        rollout_id=_optional(obj, "rollout_id", str),
        step=_optional(obj, "step", int),
        traffic_fraction=_finite(
            "traffic_fraction", _optional(obj, "traffic_fraction", (int, float))
        ),
        features=features,
    )


def _decode_outcome_checked(raw: bytes) -> OutcomeEvent:
    obj = _load(raw)
    kpis = _optional(obj, "kpis", dict) or {}
    clean: dict[str, float] = {}
    for name, value in kpis.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise EventError(f"kpi {name!r} is not a number")
        clean[str(name)] = _finite(f"kpis.{name}", value)  # type: ignore[assignment]
    return OutcomeEvent(
        **_common(obj),
        request_id=_require(obj, "request_id", str),
        label=obj.get("label"),
        kpis=clean,
    )


def decode_decision(raw: bytes) -> DecisionEvent:
    obj = _load(raw)
    return DecisionEvent(
        **_common(obj),
        rollout_id=_require(obj, "rollout_id", str),
        action=_enum(Action, obj, "action"),
        from_state=_require(obj, "from_state", str),
        to_state=_require(obj, "to_state", str),
        traffic_fraction=_finite(  # type: ignore[arg-type]
            "traffic_fraction", _require(obj, "traffic_fraction", (int, float))
        ),
        reason=_require(obj, "reason", str),
        evidence=_optional(obj, "evidence", dict) or {},
    )
