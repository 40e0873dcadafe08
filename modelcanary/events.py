"""Event contract, schema version 1: predictions, outcomes, decisions, dead letters.

Every event is a JSON object with ``event_id`` (UUID, the idempotency key),
``schema_version``, ``ts`` (RFC 3339, UTC) and ``model``. Predictions and outcomes are
keyed by ``request_id``, decisions by ``model``, dead letters by the original key.
Fields may be added within a schema version; renaming or removing one is a new version.

``decode_*`` functions raise :class:`~modelcanary.errors.EventError` with a reason a
dead-letter record can carry; they never raise anything else on bad bytes.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from modelcanary.errors import EventError

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 1_000_000


class Arm(StrEnum):
    """The two arms of a rollout, named after the MLflow aliases."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"


class Mode(StrEnum):
    """Canary: the challenger answers a fraction of users. Shadow: it answers a mirrored copy."""

    CANARY = "canary"
    SHADOW = "shadow"


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
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    return str(uuid.uuid4())


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


@dataclass(frozen=True)
class DeadLetterEvent:
    """A record a consumer could not use, with the reason and the original bytes."""

    model: str
    source_topic: str
    reason: str
    payload: str
    original_key: str | None = None
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return self.original_key if self.original_key is not None else self.source_topic

    @classmethod
    def wrap(
        cls, source_topic: str, raw: bytes, reason: str, key: bytes | None = None, model: str = ""
    ) -> DeadLetterEvent:
        return cls(
            model=model,
            source_topic=source_topic,
            reason=reason,
            payload=base64.b64encode(raw).decode("ascii"),
            original_key=None if key is None else key.decode("utf-8", "replace"),
        )


Event = PredictionEvent | OutcomeEvent | DecisionEvent | DeadLetterEvent


def to_dict(event: Event) -> dict[str, Any]:
    return asdict(event)


def encode(event: Event) -> bytes:
    """Serialise an event to compact UTF-8 JSON (NaN is not valid JSON and is refused)."""
    try:
        return json.dumps(to_dict(event), separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise EventError(f"{type(event).__name__} is not JSON-serialisable: {exc}") from exc


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


def decode_prediction(raw: bytes) -> PredictionEvent:
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


def decode_outcome(raw: bytes) -> OutcomeEvent:
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
