"""The evaluator: decode, join and accumulate evidence, per partition. Pure of I/O itself.

Raw records come in by the batch of one topic partition, as a consumer polls them
(:meth:`Evaluator.handle_messages` for confluent-kafka messages,
:meth:`Evaluator.handle_batch` for records with attributes, :meth:`Evaluator.handle` for
one); dead letters go out through a publisher. State is kept per partition *number*:
predictions and outcomes are keyed by request_id and both topics have the same partition
count, so partition ``p`` of each holds the same requests and one worker can join them
locally. A partition's state can
be written as a :class:`~modelcanary.snapshot.Snapshot` and restored by another worker
after a rebalance; judging the merged evidence is the controller's job
(:mod:`modelcanary.judging`). The Kafka loop around it lives in :mod:`modelcanary.workers`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, methodcaller
from typing import Any, Protocol

from modelcanary.config import Topics
from modelcanary.errors import EventError
from modelcanary.events import DeadLetterEvent, read_outcome, read_prediction
from modelcanary.join import JoinedRequest, Joiner
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import Record
from modelcanary.snapshot import Snapshot

log = logging.getLogger(__name__)

#: Requests a batch completes are observed in runs of this many rather than all at its
#: end: by the end of a batch of thousands, the first ones completed have left the CPU's
#: caches, and observing them (then freeing them) cost ~0.5 us a record more.
OBSERVE_EVERY = 256


class Publisher(Protocol):
    def publish(self, topic: str, event: Any) -> None: ...


@dataclass
class PartitionState:
    """Everything the evaluator knows from one partition number of both topics."""

    joiner: Joiner
    evidence: dict[str, RolloutEvidence] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    next_offsets: dict[str, int] = field(default_factory=dict)
    replay_until: dict[str, int] = field(default_factory=dict)
    changed: bool = False
    # rollout id -> (its observation count, since when unchanged): for idle eviction
    activity: dict[str, tuple[int, float]] = field(default_factory=dict)

    def evidence_of(self, rollout_id: str, model: str) -> RolloutEvidence:
        if rollout_id not in self.evidence:
            self.evidence[rollout_id] = RolloutEvidence()
            self.models[rollout_id] = model
        return self.evidence[rollout_id]


# What a record's offset, value and key are: attributes of a kafka-python record, methods
# of a confluent-kafka message (operator's getters: mapped over a batch in C).
_offset_attribute, _value_attribute, _key_attribute = (
    attrgetter("offset"), attrgetter("value"), attrgetter("key")
)  # fmt: skip
_offset_method, _value_method, _key_method = (
    methodcaller("offset"), methodcaller("value"), methodcaller("key")
)  # fmt: skip


@dataclass(frozen=True)
class _Batch:
    """Records of one topic partition, unpacked into offsets and values for the loops;
    the records themselves only give the key of a dead letter (a rare event)."""

    topic: str
    offsets: list[int]
    values: list[bytes | None]
    records: Sequence[Any]
    key_of: Callable[[Any], bytes | None]

    def key_at(self, offset: int) -> bytes | None:
        # Any record of this batch with this offset is the same record.
        return self.key_of(self.records[self.offsets.index(offset)])


class Evaluator:
    def __init__(
        self,
        topics: Topics,
        publisher: Publisher,
        join_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        worker: str = "",
        evidence_ttl_s: float = 7 * 24 * 3600.0,
    ) -> None:
        self.topics = topics
        self.publisher = publisher
        self.join_ttl_s = join_ttl_s
        self.evidence_ttl_s = evidence_ttl_s
        self.clock = clock
        self.worker = worker
        self.partitions: dict[int, PartitionState] = {}
        self.counts = {
            "predictions": 0, "outcomes": 0, "dead_letters": 0, "replayed": 0, "duplicates": 0,
        }  # fmt: skip

    # -- ownership -------------------------------------------------------------------
    def assign(self, partition: int, snapshot: Snapshot | None) -> dict[str, int | None]:
        """Take ownership of ``partition``; return where to start reading each topic.

        ``None`` means from the beginning (no snapshot: the whole log is new to us).
        With a snapshot, reading starts at its low watermark and records below its high
        watermark are replayed (joins rebuilt, nothing counted twice).
        """
        state = PartitionState(joiner=Joiner(ttl_s=self.join_ttl_s))
        starts: dict[str, int | None] = {t: None for t in self._input_topics()}
        if snapshot is not None:
            state.evidence = dict(snapshot.evidence)
            state.models = dict(snapshot.models)
            state.next_offsets = dict(snapshot.next_offsets)
            state.replay_until = dict(snapshot.next_offsets)
            for topic in self._input_topics():
                if topic in snapshot.next_offsets:
                    starts[topic] = min(
                        snapshot.low_offsets.get(topic, snapshot.next_offsets[topic]),
                        snapshot.next_offsets[topic],
                    )
        self.partitions[partition] = state
        return starts

    def revoke(self, partition: int) -> Snapshot | None:
        """Give ``partition`` up; return its final snapshot (to publish before letting go)."""
        if partition not in self.partitions:
            return None
        snapshot = self.snapshot(partition)
        del self.partitions[partition]
        return snapshot

    def snapshot(self, partition: int) -> Snapshot:
        state = self.partitions[partition]
        state.changed = False
        lows = state.joiner.low_watermarks()
        return Snapshot(
            partition=partition,
            next_offsets=dict(state.next_offsets),
            low_offsets={t: lows.get(t, o) for t, o in state.next_offsets.items()},
            evidence=state.evidence,
            models=dict(state.models),
            written_at=self.clock(),
            worker=self.worker,
        )

    def _input_topics(self) -> tuple[str, str]:
        return (self.topics.predictions, self.topics.outcomes)

    # -- records ---------------------------------------------------------------------
    def handle(self, record: Record) -> None:
        """Decode one record; poison goes to the dead-letter topic with the reason."""
        self.handle_batch(record.topic, record.partition, (record,))

    def handle_batch(self, topic: str, partition: int, records: Sequence[Any]) -> None:
        """Records of one topic partition, in offset order: what a poll returns for it.

        Each record needs ``offset``, ``key`` and ``value`` attributes (a :class:`Record`,
        or the kafka-python ``ConsumerRecord`` as polled: no copy). Same effect as
        :meth:`handle` on each in turn, except that the clock is read once per batch.
        """
        self._take(
            topic,
            partition,
            list(map(_offset_attribute, records)),
            list(map(_value_attribute, records)),
            records,
            _key_attribute,
        )

    def handle_messages(self, topic: str, partition: int, messages: Sequence[Any]) -> None:
        """:meth:`handle_batch` for confluent-kafka ``Message`` objects, whose offset, key
        and value are methods (``offset()``, ``key()``, ``value()``). They must all be of
        ``topic`` and ``partition``, in offset order, and none an error event (the consumer
        loop handles those: ``message.error()`` is not None)."""
        self._take(
            topic,
            partition,
            list(map(_offset_method, messages)),
            list(map(_value_method, messages)),
            messages,
            _key_method,
        )

    def _take(
        self,
        topic: str,
        partition: int,
        offsets: list[int],
        values: list[bytes | None],
        records: Sequence[Any],
        key_of: Callable[[Any], bytes | None],
    ) -> None:
        """The one loop behind both: records as ``(offset, value)`` lists; ``records`` and
        ``key_of`` are only used for the key of a dead letter."""
        state = self.partitions.get(partition)
        if state is None:  # not assigned through assign(): own it from the beginning
            self.assign(partition, None)
            state = self.partitions[partition]
        batch = _Batch(topic, offsets, values, records, key_of)
        if topic == self.topics.predictions:
            self._take_predictions(state, batch, self.clock())
        elif topic == self.topics.outcomes:
            self._take_outcomes(state, batch, self.clock())
        else:
            self._refuse(state, batch)

    def _take_predictions(self, state: PartitionState, batch: _Batch, now: float) -> None:
        """Decode, join and observe a batch of predictions. Requests the batch completes
        are observed by runs of :data:`OBSERVE_EVERY` and at its end (their statistics are
        not the predictions' own, so the order between the two does not matter), even if
        a record raises on the way."""
        topic = batch.topic
        replay_until = state.replay_until.get(topic, 0)
        next_offset = state.next_offsets.get(topic, 0)
        take = state.joiner.take_prediction
        evidence = state.evidence
        joined: list[JoinedRequest] = []
        changed = False
        predictions = replayed = duplicates = 0
        try:
            for offset, value in zip(batch.offsets, batch.values, strict=True):
                replay = offset < replay_until
                if offset < next_offset:
                    if not replay:
                        continue  # already counted (a re-delivery after a seek)
                else:
                    next_offset = offset + 1
                changed = True
                try:
                    event = read_prediction(value)  # type: ignore[arg-type]
                except EventError as exc:
                    if not replay:
                        self._dead_letter(batch, offset, value, exc)
                    continue
                fresh = take(event, now, (topic, offset), replay, joined)
                if len(joined) >= OBSERVE_EVERY:
                    self._observe(state, joined)
                    joined.clear()
                if replay:
                    replayed += 1
                elif not fresh:
                    duplicates += 1
                else:
                    predictions += 1
                    rollout_id = event.rollout_id
                    if rollout_id is not None:
                        acc = evidence.get(rollout_id)
                        if acc is None:
                            acc = state.evidence_of(rollout_id, event.model)
                        acc.observe_prediction(event)
        finally:
            if joined:
                self._observe(state, joined)
            state.next_offsets[topic] = next_offset
            if changed:
                state.changed = True
            counts = self.counts
            counts["predictions"] += predictions
            counts["replayed"] += replayed
            counts["duplicates"] += duplicates

    def _take_outcomes(self, state: PartitionState, batch: _Batch, now: float) -> None:
        """Decode and join a batch of outcomes; observe the requests completed (at the
        end of the batch, as :meth:`_take_predictions` does)."""
        topic = batch.topic
        replay_until = state.replay_until.get(topic, 0)
        next_offset = state.next_offsets.get(topic, 0)
        take = state.joiner.take_outcome
        joined: list[JoinedRequest] = []
        changed = False
        outcomes = replayed = 0
        try:
            for offset, value in zip(batch.offsets, batch.values, strict=True):
                replay = offset < replay_until
                if offset < next_offset:
                    if not replay:
                        continue  # already counted (a re-delivery after a seek)
                else:
                    next_offset = offset + 1
                changed = True
                try:
                    event = read_outcome(value)  # type: ignore[arg-type]
                except EventError as exc:
                    if not replay:
                        self._dead_letter(batch, offset, value, exc)
                    continue
                if replay:
                    replayed += 1
                else:
                    outcomes += 1
                take(event, now, (topic, offset), replay, joined)
                if len(joined) >= OBSERVE_EVERY:
                    self._observe(state, joined)
                    joined.clear()
        finally:
            if joined:
                self._observe(state, joined)
            state.next_offsets[topic] = next_offset
            if changed:
                state.changed = True
            self.counts["outcomes"] += outcomes
            self.counts["replayed"] += replayed

    def _refuse(self, state: PartitionState, batch: _Batch) -> None:
        topic = batch.topic
        error = EventError(f"the evaluator does not read topic {topic}")
        for offset, value in zip(batch.offsets, batch.values, strict=True):
            replay = offset < state.replay_until.get(topic, 0)
            if offset < state.next_offsets.get(topic, 0) and not replay:
                continue
            state.next_offsets[topic] = max(state.next_offsets.get(topic, 0), offset + 1)
            state.changed = True
            if not replay:
                self._dead_letter(batch, offset, value, error)

    def _dead_letter(
        self, batch: _Batch, offset: int, value: bytes | None, exc: EventError
    ) -> None:
        self.counts["dead_letters"] += 1
        letter = DeadLetterEvent.wrap(batch.topic, value or b"", str(exc), batch.key_at(offset))
        self.publisher.publish(self.topics.deadletter, letter)

    @staticmethod
    def _observe(state: PartitionState, joined: list[JoinedRequest]) -> None:
        evidence = state.evidence
        observed = False
        for request in joined:
            rollout_id = None
            for p in request.predictions.values():
                if p.rollout_id:
                    rollout_id = p.rollout_id
                    break
            if rollout_id is not None:
                acc = evidence.get(rollout_id)
                if acc is None:
                    first = next(iter(request.predictions.values()))
                    acc = state.evidence_of(rollout_id, first.model)
                acc.observe_request(request)
                observed = True
        if observed:
            state.changed = True

    def expire(self) -> None:
        """Settle the joins past their TTL, and forget rollouts idle for ``evidence_ttl_s``.

        Evidence of a rollout that ended stays useless in every snapshot otherwise (a few
        hundred KB per rollout and partition, for ever). The evaluator does not know when a
        rollout ends, only when its events stop: a rollout no event reached for the TTL
        (a week by default, far beyond any step) is dropped from the partition, and
        should it ever get traffic again, it starts from no evidence.
        """
        now = self.clock()
        for state in self.partitions.values():
            self._observe(state, state.joiner.expire(now))
            self._evict_idle(state, now)

    def _evict_idle(self, state: PartitionState, now: float) -> None:
        for rollout_id, evidence in list(state.evidence.items()):
            seen = evidence.observations()
            count, since = state.activity.get(rollout_id, (-1, now))
            if seen != count:
                state.activity[rollout_id] = (seen, now)
            elif now - since >= self.evidence_ttl_s:
                log.info("forgetting rollout %s of %s: no event for %.0f s", rollout_id,
                         state.models.get(rollout_id), now - since)  # fmt: skip
                del state.evidence[rollout_id], state.activity[rollout_id]
                state.models.pop(rollout_id, None)
                state.changed = True

    # -- views -----------------------------------------------------------------------
    def open_joins(self) -> int:
        return sum(s.joiner.open_count for s in self.partitions.values())

    def merged_evidence(self) -> dict[str, RolloutEvidence]:
        """Evidence per rollout, merged over the partitions this evaluator owns."""
        parts: dict[str, list[RolloutEvidence]] = {}
        for state in self.partitions.values():
            for rollout_id, evidence in state.evidence.items():
                parts.setdefault(rollout_id, []).append(evidence)
        return {r: RolloutEvidence.merged(p) for r, p in parts.items()}
