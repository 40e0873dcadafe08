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

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import msgspec

from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, PredictionFields

Origin = tuple[str, int]
_ARMS = len(Arm)
_SHADOW = Mode.SHADOW  # a global: Mode.SHADOW is a slower lookup through the enum class
#: Most distinct model names, versions and rollout ids a joiner shares before it starts over.
_MAX_SHARED_STRINGS = 10_000


class JoinedPrediction(msgspec.Struct, frozen=True, gc=False):
    """What a join keeps of a prediction event: the fields read once its outcome is here
    (:mod:`modelcanary.judge.clean`, the evaluator), with the attribute names of
    :class:`~modelcanary.events.PredictionEvent`.

    An open join waits for thousands of other events; by then whatever it holds has
    left the CPU's caches, and every object it keeps is a cache miss to read and to
    free. The whole event (ids, timestamp, unit, latency, a dozen objects) is freed
    while still in cache; its model, version and rollout id are shared with the
    other joins of the same rollout.
    """

    model: str
    version: str
    arm: Arm
    mode: Mode
    served: bool
    prediction: Any = None
    score: float | None = None
    error: str | None = None
    rollout_id: str | None = None
    step: int | None = None


class JoinedRequest:
    """Everything known about one request: the predictions of each arm and its outcome.

    Read-only by convention (a plain slotted class rather than a frozen dataclass: the
    joiner hands its open joins out as they are, see :class:`_Pending`)."""

    __slots__ = ("outcome", "predictions", "request_id")

    def __init__(
        self,
        request_id: str,
        predictions: dict[Arm, JoinedPrediction | PredictionFields],
        outcome: OutcomeEvent | None,
    ) -> None:
        self.request_id = request_id
        self.predictions = predictions
        self.outcome = outcome

    @property
    def mode(self) -> Mode:
        return next(iter(self.predictions.values())).mode

    @property
    def served(self) -> JoinedPrediction | PredictionFields | None:
        return next((p for p in self.predictions.values() if p.served), None)

    def prediction_of(self, arm: Arm) -> JoinedPrediction | PredictionFields | None:
        return self.predictions.get(arm)

    def __repr__(self) -> str:
        arms = ", ".join(arm.value for arm in self.predictions)
        return f"JoinedRequest({self.request_id!r}, arms=[{arms}], outcome={self.outcome!r})"


class _Pending(JoinedRequest):
    """An open join; once finished it is handed out as the :class:`JoinedRequest` itself
    (no copy: it is out of the joiner by then). Predictions are kept as
    :class:`JoinedPrediction`."""

    __slots__ = ("first_seen", "origins", "replayed_only")

    def __init__(self, request_id: str, first_seen: float) -> None:
        self.request_id = request_id
        self.predictions = {}
        self.outcome = None
        self.first_seen = first_seen
        self.origins: list[Origin] = []
        self.replayed_only = True


def _complete(pending: _Pending) -> bool:
    """Whether the outcome and every prediction it needs are here: the served one in
    canary mode, both arms in shadow mode."""
    predictions = pending.predictions
    if pending.outcome is None or not predictions:
        return False
    served = False
    for p in predictions.values():
        if p.mode is _SHADOW:
            return len(predictions) == _ARMS
        served = served or p.served
    return served


@dataclass
class JoinCounters:
    joined: int = 0
    expired_without_outcome: int = 0
    dropped_orphan_outcomes: int = 0
    duplicates: int = 0
    dropped_after_restore: int = 0


class Joiner:
    """Holds open joins; returns :class:`JoinedRequest` objects as they complete.

    Memory is bounded: at most ``max_open`` open joins (when one more opens, the oldest
    is released without its outcome), and the last ``remember_done`` finished requests,
    to recognise duplicates (older ones are forgotten first). A finished request is
    remembered by the hash of its id (``hash(str)``, 64 bits, kept in the string: no
    extra work), about 70 bytes each, whatever the id's length; two ids with the same
    hash make the second look like a duplicate, with probability ``remember_done /
    2**64`` per request. The hash is salted per process, which is fine: this memory is
    never shared nor persisted (a restored worker rebuilds its open joins by replay).
    """

    def __init__(
        self, ttl_s: float = 3600.0, max_open: int = 200_000, remember_done: int = 200_000
    ) -> None:
        self.ttl_s = ttl_s
        self.max_open = max_open
        self.remember_done = remember_done
        self._open: OrderedDict[str, _Pending] = OrderedDict()
        self._done: set[int] = set()  # hashes of the ids of finished requests
        self._done_order: deque[int] = deque()  # the same, oldest first
        self._shared: dict[str, str] = {}  # one object per model name, version, rollout id
        self.counters = JoinCounters()

    @property
    def open_count(self) -> int:
        return len(self._open)

    def add_prediction(
        self,
        event: PredictionFields,
        now: float,
        origin: Origin | None = None,
        replay: bool = False,
    ) -> list[JoinedRequest]:
        out: list[JoinedRequest] = []
        self.take_prediction(event, now, origin, replay, out)
        return out

    def add_outcome(
        self,
        event: OutcomeEvent,
        now: float,
        origin: Origin | None = None,
        replay: bool = False,
    ) -> list[JoinedRequest]:
        out: list[JoinedRequest] = []
        self.take_outcome(event, now, origin, replay, out)
        return out

    def take_prediction(
        self,
        event: PredictionFields,
        now: float,
        origin: Origin | None,
        replay: bool,
        out: list[JoinedRequest],
    ) -> bool:
        """:meth:`add_prediction` appending to ``out``; False when ``event`` is a duplicate
        (what :meth:`is_duplicate` said before the call)."""
        # The evaluator's hot path, written out (as is take_outcome): a record's origin is
        # kept, a complete join is finished, then joins past their TTL are released
        # (what _evict does, without a call when nothing is due).
        request_id = event.request_id
        open_ = self._open
        pending = open_.get(request_id)
        if pending is None:
            if hash(request_id) in self._done:
                self.counters.duplicates += not replay
                self._evict(now, out)
                return False
            pending = open_[request_id] = _Pending(request_id, now)
        elif event.arm in pending.predictions:
            self.counters.duplicates += not replay
            self._evict(now, out)
            return False
        pending.predictions[event.arm] = self._joined(event)
        if origin is not None:
            pending.origins.append(origin)
        if not replay:
            pending.replayed_only = False
        if pending.outcome is not None and _complete(pending):
            self._finish(request_id, pending, out)
        if open_ and now - open_[next(iter(open_))].first_seen >= self.ttl_s:
            self._expire(now, out)
        if len(open_) > self.max_open:
            self._evict(now, out)
        return True

    def _joined(self, event: PredictionFields) -> JoinedPrediction:
        shared = self._shared
        if len(shared) > _MAX_SHARED_STRINGS:
            shared.clear()
        model, version, rollout_id = event.model, event.version, event.rollout_id
        return JoinedPrediction(
            shared.setdefault(model, model),
            shared.setdefault(version, version),
            event.arm,
            event.mode,
            event.served,
            event.prediction,
            event.score,
            event.error,
            rollout_id if rollout_id is None else shared.setdefault(rollout_id, rollout_id),
            event.step,
        )

    def take_outcome(
        self,
        event: OutcomeEvent,
        now: float,
        origin: Origin | None,
        replay: bool,
        out: list[JoinedRequest],
    ) -> bool:
        """:meth:`add_outcome` appending to ``out``; False when ``event`` is a duplicate."""
        request_id = event.request_id
        open_ = self._open
        pending = open_.get(request_id)
        if pending is None:
            if hash(request_id) in self._done:
                self.counters.duplicates += not replay
                self._evict(now, out)
                return False
            pending = open_[request_id] = _Pending(request_id, now)
        elif pending.outcome is not None:
            self.counters.duplicates += not replay
            self._evict(now, out)
            return False
        pending.outcome = event
        if origin is not None:
            pending.origins.append(origin)
        if not replay:
            pending.replayed_only = False
        predictions = pending.predictions
        complete = False  # what _complete says (the outcome is here), inline
        for p in predictions.values():
            if p.mode is _SHADOW:
                complete = len(predictions) == _ARMS
                break
            complete = complete or p.served
        if complete:  # _finish and _mark_done, inline
            del open_[request_id]
            key = hash(request_id)
            done = self._done
            if key not in done:
                done.add(key)
                order = self._done_order
                order.append(key)
                while len(order) > self.remember_done:
                    done.discard(order.popleft())
            if not pending.replayed_only:
                self.counters.joined += 1
                out.append(pending)
        if open_ and now - open_[next(iter(open_))].first_seen >= self.ttl_s:
            self._expire(now, out)
        if len(open_) > self.max_open:
            self._evict(now, out)
        return True

    def is_duplicate(self, event: PredictionEvent) -> bool:
        """Whether this prediction (same request, same arm) was already taken."""
        if hash(event.request_id) in self._done:
            return True
        pending = self._open.get(event.request_id)
        return pending is not None and event.arm in pending.predictions

    def expire(self, now: float) -> list[JoinedRequest]:
        """Release joins older than the TTL (call periodically)."""
        released: list[JoinedRequest] = []
        self._expire(now, released)
        return released

    def low_watermarks(self) -> dict[str, int]:
        """Per topic, the smallest offset of a record still in an open join."""
        lows: dict[str, int] = {}
        for pending in self._open.values():
            for topic, offset in pending.origins:
                if offset < lows.get(topic, offset + 1):
                    lows[topic] = offset
        return lows

    def _finish(self, request_id: str, pending: _Pending, out: list[JoinedRequest]) -> None:
        """Hand a complete join out (unless all its records were replayed), remembering
        its request as done."""
        del self._open[request_id]
        self._mark_done(request_id)
        if pending.replayed_only:  # every record replayed: counted before the snapshot
            return
        self.counters.joined += 1
        out.append(pending)

    def _expire(self, now: float, out: list[JoinedRequest]) -> None:
        open_ = self._open
        ttl = self.ttl_s
        while open_:
            request_id, pending = next(iter(open_.items()))
            if now - pending.first_seen < ttl:
                break
            self._release(request_id, out)

    def _evict(self, now: float, out: list[JoinedRequest]) -> None:
        open_ = self._open
        if open_ and now - open_[next(iter(open_))].first_seen >= self.ttl_s:
            self._expire(now, out)
        while len(open_) > self.max_open:
            self._release(next(iter(open_)), out)

    def _release(self, request_id: str, out: list[JoinedRequest]) -> None:
        pending = self._open.pop(request_id)
        self._mark_done(request_id)
        if pending.replayed_only and pending.origins:
            self.counters.dropped_after_restore += 1
            return
        if not pending.predictions:
            self.counters.dropped_orphan_outcomes += 1
            return
        if pending.outcome is None:
            self.counters.expired_without_outcome += 1
        else:
            self.counters.joined += 1
        out.append(pending)

    def _mark_done(self, request_id: str) -> None:
        """Remember ``request_id`` as done (its hash), forgetting the oldest beyond
        ``remember_done``."""
        key = hash(request_id)
        if key in self._done:  # only on a hash collision: keep one entry
            return
        self._done.add(key)
        order = self._done_order
        order.append(key)
        while len(order) > self.remember_done:
            self._done.discard(order.popleft())
