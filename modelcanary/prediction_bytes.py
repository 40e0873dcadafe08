"""Prediction events as Kafka record values, encoded for the serving path.

Serving makes a prediction event for every model call. Eight of its eighteen fields
(model, version, arm, mode, rollout id, step, traffic fraction, schema version) are the
same for every call of one version in one arm, mode and rollout step. So
:class:`PredictionEncoder` encodes them once, as the head of the JSON object, and per
call encodes only the ten others and appends them: a third less work than building a
:class:`~modelcanary.events.PredictionEvent` and encoding all of it.

The bytes decode to the :class:`~modelcanary.events.PredictionEvent` of the same values
(``tests/unit/test_prediction_bytes.py``); only the order of the keys differs, which JSON
readers ignore. NaN and infinities are written as null, as
:func:`~modelcanary.kafka_io.encode_event` writes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from modelcanary.events import SCHEMA_VERSION, Arm, Mode, new_event_id, utc_now

if TYPE_CHECKING:
    from modelcanary.routing import RoutingTable

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

    def encode(
        self,
        version: str,
        arm: Arm,
        mode: Mode,
        table: RoutingTable,
        request_id: str,
        served: bool,
        prediction: Any,
        score: float | None,
        latency_ms: float,
        error: str | None,
        unit_id: str | None,
        features: dict[str, Any] | None,
    ) -> bytes | None:
        """The event's JSON; None if a value is not JSON (the caller takes the slow path)."""
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
                    "ts": utc_now(),
                }
            )
        except (TypeError, ValueError, OverflowError):
            return None
        return entry[1] + tail[1:]

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
