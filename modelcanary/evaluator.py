"""The evaluator: decode, join and accumulate evidence, per partition. Pure of I/O itself.

Raw records come in through :meth:`Evaluator.handle`; dead letters go out through a
publisher. State is kept per partition *number*: predictions and outcomes are keyed by
request_id and both topics have the same partition count, so partition ``p`` of each
holds the same requests and one worker can join them locally. A partition's state can
be written as a :class:`~modelcanary.snapshot.Snapshot` and restored by another worker
after a rebalance; judging the merged evidence is the controller's job
(:mod:`modelcanary.judging`). The Kafka loop around it lives in :mod:`modelcanary.workers`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelcanary.config import Topics
from modelcanary.errors import EventError
from modelcanary.events import (
    DeadLetterEvent,
    OutcomeEvent,
    PredictionEvent,
    decode_outcome,
    decode_prediction,
)
from modelcanary.join import JoinedRequest, Joiner
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import Record
from modelcanary.snapshot import Snapshot

log = logging.getLogger(__name__)


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

    def evidence_of(self, rollout_id: str, model: str) -> RolloutEvidence:
        if rollout_id not in self.evidence:
            self.evidence[rollout_id] = RolloutEvidence()
            self.models[rollout_id] = model
        return self.evidence[rollout_id]


class Evaluator:
    def __init__(
        self,
        topics: Topics,
        publisher: Publisher,
        join_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        worker: str = "",
    ) -> None:
        self.topics = topics
        self.publisher = publisher
        self.join_ttl_s = join_ttl_s
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
        state = self.partitions.get(record.partition)
        if state is None:  # not assigned through assign(): own it from the beginning
            self.assign(record.partition, None)
            state = self.partitions[record.partition]
        if record.offset < state.next_offsets.get(record.topic, 0) and not self._replaying(
            state, record
        ):
            return  # already counted (a re-delivery after a seek)
        replay = self._replaying(state, record)
        state.next_offsets[record.topic] = max(
            state.next_offsets.get(record.topic, 0), record.offset + 1
        )
        state.changed = True
        now = self.clock()
        origin = (record.topic, record.offset)
        try:
            if record.topic == self.topics.predictions:
                self._on_prediction(state, decode_prediction(record.value), now, origin, replay)
            elif record.topic == self.topics.outcomes:
                self._on_outcome(state, decode_outcome(record.value), now, origin, replay)
            else:
                raise EventError(f"the evaluator does not read topic {record.topic}")
        except EventError as exc:
            if replay:
                return
            self.counts["dead_letters"] += 1
            letter = DeadLetterEvent.wrap(record.topic, record.value or b"", str(exc), record.key)
            self.publisher.publish(self.topics.deadletter, letter)

    @staticmethod
    def _replaying(state: PartitionState, record: Record) -> bool:
        return record.offset < state.replay_until.get(record.topic, 0)

    def _on_prediction(
        self, state: PartitionState, event: PredictionEvent, now: float,
        origin: tuple[str, int], replay: bool,
    ) -> None:  # fmt: skip
        if replay:
            self.counts["replayed"] += 1
        elif state.joiner.is_duplicate(event):
            self.counts["duplicates"] += 1
        else:
            self.counts["predictions"] += 1
            if event.rollout_id is not None:
                state.evidence_of(event.rollout_id, event.model).observe_prediction(event)
        self._observe(state, state.joiner.add_prediction(event, now, origin, replay))

    def _on_outcome(
        self, state: PartitionState, event: OutcomeEvent, now: float,
        origin: tuple[str, int], replay: bool,
    ) -> None:  # fmt: skip
        if replay:
            self.counts["replayed"] += 1
        else:
            self.counts["outcomes"] += 1
        self._observe(state, state.joiner.add_outcome(event, now, origin, replay))

    @staticmethod
    def _observe(state: PartitionState, joined: list[JoinedRequest]) -> None:
        for request in joined:
            first = next(iter(request.predictions.values()))
            rollout_id = next(
                (p.rollout_id for p in request.predictions.values() if p.rollout_id), None
            )
            if rollout_id is not None:
                state.evidence_of(rollout_id, first.model).observe_request(request)
                state.changed = True

    def expire(self) -> None:
        now = self.clock()
        for state in self.partitions.values():
            self._observe(state, state.joiner.expire(now))

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
