"""An evaluator worker: one member of the ``<topic prefix>.evaluator`` consumer group.

Workers share the partitions of the predictions and outcomes topics (the range
assignor gives partition ``p`` of both topics to the same member, since both have the
same partition count). Each worker publishes a snapshot of every partition it owns to
the evaluator-state topic, keyed by partition number; the controller merges them.

Order of side effects, per snapshot round (every ``snapshot_interval_s``):

1. publish the snapshot of each changed partition and wait for the broker's ack;
2. only then commit the group offsets (they are informational: a new owner starts from
   the snapshot's own offsets, never from committed ones).

On a rebalance, a worker losing partitions publishes their final snapshots before it
lets them go; a worker gaining partitions reads their latest snapshots, restores the
evidence and seeks to the snapshot's low watermark (records below the high watermark
are replayed into the joiner only). A worker killed without warning loses at most the
work since its last snapshot, which its successor redoes from the snapshot's offsets:
nothing is lost and nothing is counted twice.

Catching up (a backlog, a new worker replaying from a snapshot), the two topics of a
partition number are read in step by record timestamp (:class:`TopicAligner`): Kafka
fetches by bytes, and an outcome is a fifth of a prediction's size, so left alone the
outcomes would run ahead by hundreds of thousands of records, each an open join held in
memory (and dropped past the joiner's ``max_open``). In step, open joins stay what a
live worker holds plus about :data:`MAX_TOPIC_LEAD_MS` of events.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from modelcanary.config import Settings, Topics
from modelcanary.errors import BrokerUnavailableError, EventError
from modelcanary.evaluator import Evaluator
from modelcanary.kafka_io import EventPublisher
from modelcanary.snapshot import Snapshot, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
#: How many of a partition's latest state records :func:`read_latest_snapshots` keeps
#: while reading, to fall back on when the newest does not decode.
SNAPSHOT_FALLBACK = 4


def read_latest_snapshots(
    bootstrap: str, topic: str, key: bytes, timeout_s: float = 30.0
) -> dict[int, Snapshot]:
    """The newest snapshot of every evaluated partition, read from the state topic.

    A record that does not decode (poison, a forged or unsigned snapshot, a tombstone) is
    skipped with a warning, and the partition keeps its newest snapshot that does (among
    the last :data:`SNAPSHOT_FALLBACK` records of its key): poison written after a valid
    snapshot does not hide it. It is not dead-lettered here: this runs at every rebalance
    in every worker and would send it again each time. The judge, which reads every
    record of the topic once, does (:class:`~modelcanary.workers.JudgeThread`).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        fetch_max_bytes=MAX_SNAPSHOT_BYTES,
        max_partition_fetch_bytes=MAX_SNAPSHOT_BYTES,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            return {}
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        # Per key, its last few records (where, value), decoded newest first below.
        raw: dict[bytes, deque[tuple[str, bytes | None]]] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(f"could not read {topic} to its end in {timeout_s} s")
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for m in messages:
                    where = f"{tp.topic}[{tp.partition}]@{m.offset}"
                    kept = raw.setdefault(m.key or b"", deque(maxlen=SNAPSHOT_FALLBACK))
                    kept.append((where, m.value))
    finally:
        consumer.close(autocommit=False)
    latest: dict[int, Snapshot] = {}
    for values in raw.values():
        for where, value in reversed(values):
            try:
                snapshot = decode_snapshot(value, key)
            except EventError as exc:
                log.warning("skipping the record at %s, not a snapshot we accept: %s", where, exc)
                continue
            current = latest.get(snapshot.partition)
            if current is None or snapshot.written_at >= current.written_at:
                latest[snapshot.partition] = snapshot
            break
    return latest


#: Fetch settings of the evaluator's consumer; ``benchmarks/evaluator_throughput.py``
#: measures raw consumption and the evaluator with these same settings. Small fetches
#: bound what kafka-python holds for paused partitions (:class:`TopicAligner`): catching
#: up on 10^6 requests, a worker peaked at 355 MB with 64 MiB fetches and at 230 MB with
#: 1 MiB; raw consumption was the same within 7% (1.7-1.9 x 10^5 records/s), and the
#: evaluator faster with 1 MiB (6.7 x 10^4 against 5.8 x 10^4 records/s).
CONSUMER_FETCH: dict[str, int] = {
    "max_poll_records": 5_000,
    "fetch_max_bytes": 1024 * 1024,
    "max_partition_fetch_bytes": 256 * 1024,
}
#: Cyclic-GC thresholds of an evaluator process (CPython's default is (700, 10, 10)).
#: Joins keep each event alive for a while, so with the defaults most events are
#: promoted and a large share of the time went into collections that find nothing to
#: free: the evaluator's state has no reference cycles.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS` for this process (an evaluator worker's own)."""
    gc.set_threshold(*GC_THRESHOLDS)


#: How far (record timestamps) one topic of a partition number may run ahead of the other
#: while the other still has records to read.
MAX_TOPIC_LEAD_MS = 1_000
#: A partition paused this long while its partner delivered nothing is resumed, and not
#: paused again for as long (a safety net: the partner should be delivering).
ALIGNMENT_GIVE_UP_S = 30.0


class TopicAligner:
    """Reads the predictions and outcomes of each partition number in step.

    After each poll it compares, per partition number, the timestamps of the last record
    read from each topic: a topic more than ``max_lead_ms`` ahead of its partner (or
    read while its partner has not been yet) is paused while the partner still has
    records to read (its high watermark, from the last fetch, is beyond the consumer's
    position), and resumed once the partner has caught up to within half that, or has
    nothing more to read. At most one of the two is paused, so the pair always makes
    progress; should the partner deliver nothing for ``give_up_s`` all the same, the
    pause is lifted. kafka-python keeps what it already fetched for a paused partition
    and hands it over after the resume (see :func:`_unpark`): nothing is fetched twice.
    """

    def __init__(
        self,
        consumer: KafkaConsumer,
        topics: Topics,
        max_lead_ms: int = MAX_TOPIC_LEAD_MS,
        give_up_s: float = ALIGNMENT_GIVE_UP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.max_lead_ms = max_lead_ms
        self.give_up_s = give_up_s
        self.clock = clock
        self._partner = {topics.predictions: topics.outcomes, topics.outcomes: topics.predictions}
        self._last_ts: dict[TopicPartition, int] = {}  # of the last record read
        self._delivered_at: dict[TopicPartition, float] = {}  # when it last gave records
        self._paused: dict[TopicPartition, float] = {}  # -> since when
        self._exempt_until: dict[TopicPartition, float] = {}
        self.pauses = 0
        self.give_ups = 0

    def observe(self, polled: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Note the last record of each batch of a poll, then pause or resume."""
        now = self.clock()
        for tp, records in polled.items():
            if records and tp.topic in self._partner:
                self._last_ts[tp] = records[-1].timestamp
                self._delivered_at[tp] = now
        for tp, since in list(self._paused.items()):
            waited = now - max(since, self._delivered_at.get(self._partner_of(tp), since))
            if waited > self.give_up_s:
                log.warning("%s paused %.0f s while %s delivered nothing: resumed",
                            tp, waited, self._partner_of(tp))  # fmt: skip
                self._exempt_until[tp] = now + self.give_up_s
                self.give_ups += 1
                self._resume(tp)
            elif not self._keep_paused(tp):
                self._resume(tp)
        for tp in list(self._last_ts):
            if tp not in self._paused and self._should_pause(tp, now):
                self._paused[tp] = now
                self.consumer.pause(tp)
                self.pauses += 1
        if self.pauses:
            _unpark(self.consumer)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is known of ``partitions`` (revoked, or moved by a seek)."""
        for tp in partitions:
            self._last_ts.pop(tp, None)
            self._delivered_at.pop(tp, None)
            if tp in self._paused:
                with contextlib.suppress(KafkaError):
                    self._resume(tp)

    def _resume(self, tp: TopicPartition) -> None:
        del self._paused[tp]
        self.consumer.resume(tp)

    def _partner_of(self, tp: TopicPartition) -> TopicPartition:
        return TopicPartition(self._partner[tp.topic], tp.partition)

    def _has_more(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` has records not read yet (as of its last fetch)."""
        try:
            high = self.consumer.highwater(tp)
            position = None if high is None else self.consumer.position(tp, timeout_ms=0)
        except KafkaError:  # no longer assigned
            return False
        return position is not None and high > position  # type: ignore[operator]

    def _ahead(self, tp: TopicPartition, by_ms: float) -> bool:
        """Whether ``tp`` is more than ``by_ms`` ahead of its partner, and the partner has
        records to read (a partner not read yet that has some is behind by any amount)."""
        partner = self._partner_of(tp)
        if not self._has_more(partner):
            return False
        theirs = self._last_ts.get(partner)
        return theirs is None or self._last_ts[tp] - theirs > by_ms

    def _should_pause(self, tp: TopicPartition, now: float) -> bool:
        return (
            self._partner_of(tp) not in self._paused
            and now >= self._exempt_until.get(tp, 0.0)
            and self._ahead(tp, self.max_lead_ms)
        )

    def _keep_paused(self, tp: TopicPartition) -> bool:
        return tp in self._last_ts and self._ahead(tp, self.max_lead_ms / 2)


def _unpark(consumer: KafkaConsumer) -> None:
    """Work around a kafka-python 3.0.12 bug that would stall a resumed partition for good.

    Records already fetched for a partition paused half-read are parked; at the start of
    a poll, one resumed partition's are handed back, but only if the fetcher's in-line
    slot is ``None``, and the slot keeps the last batch it drained, empty and not
    ``None``: the parked records stay parked, and the partition is never fetched again.
    An empty batch in the slot is the same as none (the fetcher replaces it with the
    next one), so it is cleared before each poll. A no-op if kafka-python's internals
    are not what this expects.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current and getattr(fetcher, "_paused_partition_records", None):
        fetcher._next_partition_records = None  # type: ignore[union-attr]


def feed(evaluator: Evaluator, polled: Mapping[TopicPartition, Sequence[Any]]) -> int:
    """Hand what one poll returned to ``evaluator``, a batch per topic partition (the
    records as kafka-python returns them: no copy); returns how many records."""
    handled = 0
    for tp, messages in polled.items():
        evaluator.handle_batch(tp.topic, tp.partition, messages)
        handled += len(messages)
    return handled


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: EvaluatorWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.worker.on_assigned(assigned)


class EvaluatorWorker:
    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.bootstrap = settings.resolved_kafka_bootstrap()
        self.topics = settings.topics
        self.key = settings.state_key.encode()
        self.publisher = EventPublisher(self.bootstrap, client_id="modelcanary-evaluator")
        self.evaluator = Evaluator(self.topics, self.publisher, worker=self.worker_id)
        self.snapshots_published = 0
        try:
            self._state_producer = KafkaProducer(
                bootstrap_servers=self.bootstrap.split(","),
                client_id=f"modelcanary-evaluator-state-{self.worker_id}",
                acks="all",
                max_request_size=MAX_SNAPSHOT_BYTES,
            )
            self.consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap.split(","),
                client_id=f"modelcanary-evaluator-{self.worker_id}",
                group_id=f"{settings.topics.prefix}.evaluator",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                max_poll_interval_ms=settings.max_poll_interval_ms,
                **CONSUMER_FETCH,
            )
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"Kafka at {self.bootstrap} is not reachable ({type(exc).__name__}): run "
                "`modelcanary up` or set MODELCANARY_KAFKA_BOOTSTRAP"
            ) from exc
        self.aligner = TopicAligner(self.consumer, self.topics)
        self.consumer.subscribe([self.topics.predictions, self.topics.outcomes],
                                listener=_Rebalance(self))  # fmt: skip

    # -- rebalance -------------------------------------------------------------------
    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.aligner.forget(revoked)
        for number in sorted({tp.partition for tp in revoked}):
            snapshot = self.evaluator.revoke(number)
            if snapshot is not None:
                self._publish(snapshot)
        log.info("%s gave up partitions %s", self.worker_id,
                 sorted({tp.partition for tp in revoked}))  # fmt: skip

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.aligner.forget(assigned)
        numbers = sorted({tp.partition for tp in assigned} - set(self.evaluator.partitions))
        if not numbers:
            return
        latest = read_latest_snapshots(self.bootstrap, self.topics.evaluator_state, self.key)
        for number in numbers:
            starts = self.evaluator.assign(number, latest.get(number))
            for topic, offset in starts.items():
                tp = TopicPartition(topic, number)
                if tp not in assigned:
                    continue
                if offset is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, offset)
        restored = [n for n in numbers if n in latest]
        log.info("%s took partitions %s (restored from snapshots: %s)", self.worker_id,
                 numbers, restored)  # fmt: skip

    # -- loop ------------------------------------------------------------------------
    def _publish(self, snapshot: Snapshot) -> None:
        value = encode_snapshot(snapshot, self.key)
        future = self._state_producer.send(
            self.topics.evaluator_state, key=str(snapshot.partition).encode(), value=value
        )
        future.get(timeout=30)
        self.snapshots_published += 1

    def snapshot_all(self, only_changed: bool = True) -> None:
        """Publish snapshots (acknowledged), then commit offsets — in that order."""
        for number, state in list(self.evaluator.partitions.items()):
            if state.changed or not only_changed:
                self._publish(self.evaluator.snapshot(number))
        try:
            self.consumer.commit()
        except KafkaError as exc:
            log.warning("offset commit failed (harmless: snapshots carry offsets): %s", exc)

    def poll_once(self, timeout_ms: int = 200) -> int:
        polled = self.consumer.poll(timeout_ms=timeout_ms)
        handled = feed(self.evaluator, polled)
        self.aligner.observe(polled)
        return handled

    def run(self, stop: threading.Event) -> None:
        tune_gc()
        next_snapshot = time.monotonic() + self.settings.snapshot_interval_s
        try:
            while not stop.is_set():
                self.poll_once()
                if time.monotonic() >= next_snapshot:
                    self.evaluator.expire()
                    self.snapshot_all()
                    next_snapshot = time.monotonic() + self.settings.snapshot_interval_s
            self.snapshot_all()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        finally:
            self._state_producer.flush(10)
            self._state_producer.close(5)
            self.publisher.flush()
            self.publisher.close()
