"""Prediction events as Kafka record values, encoded for the serving path.

Serving makes a prediction event for every model call. It hands the publisher the
event's values as one tuple (:data:`PendingPrediction`) and
:meth:`PredictionEncoder.encode` turns them into JSON later, on the publisher's
sender thread, a round of events at a time. The request thread does not wait for it, and
in process it costs about 10 us a request less CPU than encoding on the request thread
(README, "Serving overhead"; batches encoded on the request thread gained nothing).

Eight of an event's eighteen fields (model, version, arm, mode, rollout id, step,
traffic fraction, schema version) are the same for every call of one version in one
arm, mode and rollout step. So the encoder encodes them once, as the head of the JSON
object, and per event encodes only the ten others and appends them.

The bytes decode to the :class:`~modelcanary.events.PredictionEvent` of the same values
(``tests/unit/test_prediction_bytes.py``); only the order of the keys differs, which JSON
readers ignore. NaN and infinities are written as null, as
:func:`~modelcanary.kafka_io.encode_event` writes them. What msgspec refuses goes through
the dataclass and :func:`modelcanary.events.encode`; an event that is not JSON at all is
dropped with a log line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from modelcanary.errors import EventError
from modelcanary.events import (
    SCHEMA_VERSION,
    Arm,
    Mode,
    PredictionEvent,
    encode,
    new_event_id,
    utc_text,
)

if TYPE_CHECKING:
    from modelcanary.routing import RoutingTable

log = logging.getLogger(__name__)

#: One prediction event as serving hands it over: version, arm, mode, routing table,
#: request id, served, prediction, score, latency in ms, error, unit id, features (None
#: when features are not logged) and the time of the call in seconds since the epoch.
#: A plain tuple: serving makes one per model call.
PendingPrediction = tuple[
    str, Arm, Mode, "RoutingTable", str, bool, Any, "float | None", float, "str | None",
    "str | None", "dict[str, Any] | None", float,
]  # fmt: skip

_JSON = msgspec.json.Encoder()
#: Heads kept at most: one per (version, arm, mode) is in use at a time.
MAX_HEADS = 16


class PredictionEncoder:
    """Encodes the prediction events of one model, reusing each head while its table lasts."""

    def __init__(self, model: str) -> None:
        self.model = model
        # (version, champion?, shadow?) -> (the table the head was made for, the head).
        # A table is replaced, never changed, when the split changes: its identity says
        # whether a head is current. Threads may race here; that only makes a head twice.
        self._heads: dict[tuple[str, bool, bool], tuple[RoutingTable, bytes]] = {}

    def encode(self, pending: PendingPrediction) -> bytes | None:
        """The event's JSON; None (logged) if it is not JSON at all."""
        (version, arm, mode, table, request_id, served, prediction, score, latency_ms, error,
         unit_id, features, ts) = pending  # fmt: skip
        key = (version, arm is Arm.CHAMPION, mode is Mode.SHADOW)
        try:
            entry = self._heads.get(key)
            if entry is None or entry[0] is not table:
                entry = (table, self._head(version, arm, mode, table))
                if len(self._heads) >= MAX_HEADS:
                    self._heads.clear()
                self._heads[key] = entry
            tail = _JSON.encode(
                {
                    "request_id": request_id,
                    "served": served,
                    "prediction": prediction,
                    "score": score,
                    "latency_ms": latency_ms,
                    "error": error,
                    "unit_id": unit_id,
                    "features": features,
                    "event_id": new_event_id(),
                    "ts": utc_text(ts),
                }
            )
        except (TypeError, ValueError, OverflowError):
            return self._encode_event(pending)
        return entry[1] + tail[1:]

    def _encode_event(self, pending: PendingPrediction) -> bytes | None:
        """The slow path, for what msgspec refuses: the dataclass and the ``json`` module."""
        (version, arm, mode, table, request_id, served, prediction, score, latency_ms, error,
         unit_id, features, ts) = pending  # fmt: skip
        rollout_id = table.rollout_id
        event = PredictionEvent(
            model=self.model,
            request_id=request_id,
            version=version,
            arm=arm,
            mode=mode,
            served=served,
            prediction=prediction,
            score=score,
            latency_ms=latency_ms,
            error=error,
            unit_id=unit_id,
            rollout_id=rollout_id,
            step=table.step,
            traffic_fraction=table.traffic_fraction if rollout_id is not None else None,
            features=features,
            ts=utc_text(ts),
        )
        try:
            return encode(event)
        except EventError as exc:
            log.error("dropping the prediction event of request %r: %s", request_id, exc)
            return None

    def _head(self, version: str, arm: Arm, mode: Mode, table: RoutingTable) -> bytes:
        """``{"model":...,"schema_version":1,`` — the constant fields, open for the rest."""
        rollout_id = table.rollout_id
        head = _JSON.encode(
            {
                "model": self.model,
                "version": version,
                "arm": arm,
                "mode": mode,
                "rollout_id": rollout_id,
                "step": table.step,
                "traffic_fraction": table.traffic_fraction if rollout_id is not None else None,
                "schema_version": SCHEMA_VERSION,
            }
        )
        return head[:-1] + b","
