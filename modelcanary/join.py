"""Join predictions with their outcomes by request_id. Pure: no I/O, time is passed in.

An outcome may arrive before its prediction or long after it. A request is *complete*
when its outcome and every prediction it needs are here: the served prediction in
canary mode, both arms in shadow mode (they answered the same request, which is what
makes shadow comparisons paired). Requests that never complete are released when
their time-to-live runs out (predictions without outcome) or dropped (outcomes whose
prediction never came), so memory is bounded by open joins, never by history.
Duplicates (same arm twice, a second outcome, anything for a request already
completed recently) are ignored and counted.

Restoring after a rebalance. Each record may carry its origin ``(topic, offset)``. A
worker that takes over a partition restores the evidence of a snapshot and replays the
partition from the snapshot's low watermark (:meth:`Joiner.low_watermarks`: the oldest
record still in an open join) with ``replay=True`` up to the snapshot's high watermark.
Replayed records rebuild open joins but are never counted again: a join made only of
replayed records was counted before the snapshot (whichever record completes it — the
two topics are consumed independently, so a new record may arrive before its replayed
partner), and a join made only of replayed records that expires is dropped (it was
either counted before, or it was open at the snapshot and would have expired without
an outcome — the one thing a restore may lose, and it carries no labelled evidence).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace

from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent

Origin = tuple[str, int]


@dataclass(frozen=True)
class JoinedRequest:
    """Everything known about one request: the predictions of each arm and its outcome."""

    request_id: str
    predictions: dict[Arm, PredictionEvent]
    outcome: OutcomeEvent | None

    @property
    def mode(self) -> Mode:
        return next(iter(self.predictions.values())).mode

    @property
    def served(self) -> PredictionEvent | None:
        return next((p for p in self.predictions.values() if p.served), None)

    def prediction_of(self, arm: Arm) -> PredictionEvent | None:
        return self.predictions.get(arm)


@dataclass
class _Pending:
    first_seen: float
    predictions: dict[Arm, PredictionEvent] = field(default_factory=dict)
    outcome: OutcomeEvent | None = None
    origins: list[Origin] = field(default_factory=list)
    replayed_only: bool = True

    def complete(self) -> bool:
        if self.outcome is None or not self.predictions:
            return False
        if any(p.mode is Mode.SHADOW for p in self.predictions.values()):
            return len(self.predictions) == len(Arm)
        return any(p.served for p in self.predictions.values())


@dataclass
class JoinCounters:
    joined: int = 0
    expired_without_outcome: int = 0
    dropped_orphan_outcomes: int = 0
    duplicates: int = 0
    dropped_after_restore: int = 0


class Joiner:
    """Holds open joins; returns :class:`JoinedRequest` objects as they complete."""

    def __init__(
        self, ttl_s: float = 3600.0, max_open: int = 200_000, remember_done: int = 200_000
    ) -> None:
        self.ttl_s = ttl_s
        self.max_open = max_open
        self.remember_done = remember_done
        self._open: OrderedDict[str, _Pending] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()
        self.counters = JoinCounters()

    @property
    def open_count(self) -> int:
        return len(self._open)

    def add_prediction(
        self,
        event: PredictionEvent,
        now: float,
        origin: Origin | None = None,
        replay: bool = False,
    ) -> list[JoinedRequest]:
        pending = self._pending(event.request_id, now)
        if pending is None or event.arm in pending.predictions:
            self.counters.duplicates += not replay
            return self._evict(now)
        # Features were already observed with the prediction; a join does not need them.
        pending.predictions[event.arm] = _without_features(event)
        return self._settle(event.request_id, pending, origin, replay) + self._evict(now)

    def add_outcome(
        self,
        event: OutcomeEvent,
        now: float,
        origin: Origin | None = None,
        replay: bool = False,
    ) -> list[JoinedRequest]:
        pending = self._pending(event.request_id, now)
        if pending is None or pending.outcome is not None:
            self.counters.duplicates += not replay
            return self._evict(now)
        pending.outcome = event
        return self._settle(event.request_id, pending, origin, replay) + self._evict(now)

    def is_duplicate(self, event: PredictionEvent) -> bool:
        """Whether this prediction (same request, same arm) was already taken."""
        if event.request_id in self._done:
            return True
        pending = self._open.get(event.request_id)
        return pending is not None and event.arm in pending.predictions

    def expire(self, now: float) -> list[JoinedRequest]:
        """Release joins older than the TTL (call periodically)."""
        released: list[JoinedRequest] = []
        while self._open:
            request_id, pending = next(iter(self._open.items()))
            if now - pending.first_seen < self.ttl_s:
                break
            released.extend(self._release(request_id))
        return released

    def low_watermarks(self) -> dict[str, int]:
        """Per topic, the smallest offset of a record still in an open join."""
        lows: dict[str, int] = {}
        for pending in self._open.values():
            for topic, offset in pending.origins:
                if offset < lows.get(topic, offset + 1):
                    lows[topic] = offset
        return lows

    def _pending(self, request_id: str, now: float) -> _Pending | None:
        if request_id in self._done:
            return None
        pending = self._open.get(request_id)
        if pending is None:
            pending = _Pending(first_seen=now)
            self._open[request_id] = pending
        return pending

    def _settle(
        self, request_id: str, pending: _Pending, origin: Origin | None, replay: bool
    ) -> list[JoinedRequest]:
        if origin is not None:
            pending.origins.append(origin)
        if not replay:
            pending.replayed_only = False
        if not pending.complete():
            return []
        del self._open[request_id]
        self._mark_done(request_id)
        if pending.replayed_only:  # every record replayed: counted before the snapshot
            return []
        self.counters.joined += 1
        return [JoinedRequest(request_id, dict(pending.predictions), pending.outcome)]

    def _evict(self, now: float) -> list[JoinedRequest]:
        released = self.expire(now)
        while len(self._open) > self.max_open:
            request_id = next(iter(self._open))
            released.extend(self._release(request_id))
        return released

    def _release(self, request_id: str) -> list[JoinedRequest]:
        pending = self._open.pop(request_id)
        self._mark_done(request_id)
        if pending.replayed_only and pending.origins:
            self.counters.dropped_after_restore += 1
            return []
        if not pending.predictions:
            self.counters.dropped_orphan_outcomes += 1
            return []
        if pending.outcome is None:
            self.counters.expired_without_outcome += 1
        else:
            self.counters.joined += 1
        return [JoinedRequest(request_id, dict(pending.predictions), pending.outcome)]

    def _mark_done(self, request_id: str) -> None:
        self._done[request_id] = None
        while len(self._done) > self.remember_done:
            self._done.popitem(last=False)


def _without_features(event: PredictionEvent) -> PredictionEvent:
    return event if event.features is None else replace(event, features=None)
