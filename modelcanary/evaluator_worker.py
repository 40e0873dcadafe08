"""An evaluator worker: one member of the ``<topic prefix>.evaluator`` consumer group.

Workers share the partitions of the predictions and outcomes topics (the range
assignor gives partition ``p`` of both topics to the same member, since both have the
same partition count). Each worker publishes a snapshot of every partition it owns to
the evaluator-state topic, keyed by partition number; the controller merges them.

Order of side effects, per snapshot round (every ``snapshot_interval_s``):

1. publish the snapshot of each changed partition and wait for the broker's ack;
2. only then commit the group offsets, synchronously (they are informational: a new
   owner starts from the snapshot's own offsets, never from committed ones).

On a rebalance, a worker losing partitions publishes their final snapshots before it
lets them go; a worker gaining partitions reads their latest snapshots, restores the
evidence and starts reading at the snapshot's low watermark (records below the high
watermark are replayed into the joiner only). A worker killed without warning loses at
most the work since its last snapshot, which its successor redoes from the snapshot's
offsets: nothing is lost and nothing is counted twice. Partitions *lost* (the group
moved on without this member, its session having expired) are dropped without a final
snapshot: another member may own them already, and their last snapshot is consistent.

The consumer is librdkafka's (confluent-kafka): it fetches and parses records in C
threads, where kafka-python spends about 5 µs of the evaluator's own thread on each
record. The state producer and :func:`read_latest_snapshots` stay on kafka-python; they
are not on the hot path.

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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from modelcanary.config import Settings, Topics
from modelcanary.errors import BrokerUnavailableError, ConfigError, EventError
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


#: librdkafka settings of the evaluator's consumer, tuned for throughput with bounded
#: memory; ``benchmarks/evaluator_throughput.py`` measures raw consumption and the
#: evaluator with these same settings. ``queued.max.messages.kbytes`` caps what the
#: fetcher threads hold pre-fetched for the whole consumer (8 MiB of records, plus up to
#: one fetch of at most 2 MiB): at 1.6 x 10^5 records/s (~100 MB/s) 4 MiB lasted less
#: than a fetch round after the backoff, and the evaluator waited for records 0.3-0.7 us
#: a record; with 8 MiB, 0.03 (16 MiB fetches only held more memory). When the cap is
#: reached, librdkafka postpones the next fetch by ``fetch.queue.backoff.ms``: at its
#: default (1 s) a worker catching up waited for records most of the time (3.5 x 10^4
#: records/s, against 9 x 10^4 at 20 ms). A paused partition's pre-fetched records are
#: dropped and fetched again on resume (:class:`TopicAligner`), so pausing holds no
#: memory. ``fetch.wait.max.ms`` is how long the broker may hold a fetch that finds
#: nothing new (10 to 500 ms read a backlog at the same rate here): it bounds the
#: latency of live records.
CONSUMER_FETCH: dict[str, int] = {
    "fetch.wait.max.ms": 100,
    "fetch.max.bytes": 2 * 1024 * 1024,
    "max.partition.fetch.bytes": 512 * 1024,
    "queued.max.messages.kbytes": 8 * 1024,
    "fetch.queue.backoff.ms": 20,
}
#: Most records one :func:`poll_into` takes from the consumer.
CONSUME_BATCH = 5_000
#: Cyclic-GC thresholds of an evaluator process (CPython's default is (700, 10, 10)).
#: Joins keep each event alive for a while, so with the defaults most events are
#: promoted and a large share of the time went into collections that find nothing to
#: free: the evaluator's state has no reference cycles.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS` for this process (an evaluator worker's own)."""
    gc.set_threshold(*GC_THRESHOLDS)


def consumer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration of an evaluator consumer: :data:`CONSUMER_FETCH`, no
    auto-commit, from the beginning when there is nothing else to go by, plus ``extra``."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "logger": log,
        **CONSUMER_FETCH,
        **extra,
    }


#: A topic partition, as the consumer loop keys it.
Key = tuple[str, int]
#: What one :func:`poll_into` read: the messages of each topic partition, in offset order.
Batches = dict[Key, list[Message]]

#: How far (record timestamps) one topic of a partition number may run ahead of the other
#: while the other still has records to read. Each pause drops what was pre-fetched for
#: the paused partition; 3 s rather than 1 s halved the pauses of a worker catching up
#: (20 against 45 over 4 x 10^5 records) for ~30% more open joins, a gain within the
#: benchmark's noise once the pre-fetch queue was large enough: 1 s it stays.
MAX_TOPIC_LEAD_MS = 1_000
#: A partition paused this long while its partner delivered nothing is resumed, and not
#: paused again for as long (a safety net: the partner should be delivering).
ALIGNMENT_GIVE_UP_S = 30.0


class TopicAligner:
    """Reads the predictions and outcomes of each partition number in step.

    After each poll it compares, per partition number, the timestamps of the last record
    read from each topic: a topic more than ``max_lead_ms`` ahead of its partner (or
    read while its partner has not been yet) is paused while the partner still has
    records to read (its high watermark, from the last fetch, is beyond the offset after
    the last record read), and resumed once the partner has caught up to within half
    that, or has nothing more to read. At most one of the two is paused, so the pair
    always makes progress; should the partner deliver nothing for ``give_up_s`` all the
    same, the pause is lifted. librdkafka drops what it pre-fetched for a partition when
    it is paused and fetches again from the position (the offset after the last record
    handed over) on resume: nothing is lost or read twice, and a pause holds no memory.
    """

    def __init__(
        self,
        consumer: Consumer,
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
        self._last_ts: dict[Key, int] = {}  # of the last record read
        self._next: dict[Key, int] = {}  # offset after the last record read
        self._delivered_at: dict[Key, float] = {}  # when it last gave records
        self._paused: dict[Key, float] = {}  # -> since when
        self._exempt_until: dict[Key, float] = {}
        self.pauses = 0
        self.give_ups = 0

    def observe(self, batches: Mapping[Key, Sequence[Message]]) -> None:
        """Note the last record of each batch of a poll, then pause or resume."""
        now = self.clock()
        for key, messages in batches.items():
            if messages and key[0] in self._partner:
                last = messages[-1]
                self._last_ts[key] = last.timestamp()[1]
                self._next[key] = last.offset() + 1  # type: ignore[operator]
                self._delivered_at[key] = now
        for key, since in list(self._paused.items()):
            waited = now - max(since, self._delivered_at.get(self._partner_of(key), since))
            if waited > self.give_up_s:
                log.warning("%s[%d] paused %.0f s while its partner delivered nothing: resumed",
                            *key, waited)  # fmt: skip
                self._exempt_until[key] = now + self.give_up_s
                self.give_ups += 1
                self._resume(key)
            elif not self._keep_paused(key):
                self._resume(key)
        for key in list(self._last_ts):
            if key not in self._paused and self._should_pause(key, now):
                self._paused[key] = now
                log.debug("pause %s", key)
                self.consumer.pause([RdTopicPartition(*key)])
                self.pauses += 1

    def forget(self, keys: Iterable[Key]) -> None:
        """Drop what is known of these topic partitions (revoked, or moved by a seek)."""
        for key in keys:
            self._last_ts.pop(key, None)
            self._next.pop(key, None)
            self._delivered_at.pop(key, None)
            if key in self._paused:
                with contextlib.suppress(KafkaException):
                    self._resume(key)

    def _resume(self, key: Key) -> None:
        log.debug("resume %s", key)
        del self._paused[key]
        self.consumer.resume([RdTopicPartition(*key)])

    def _partner_of(self, key: Key) -> Key:
        return self._partner[key[0]], key[1]

    def _has_more(self, key: Key) -> bool:
        """Whether ``key`` has records not read yet (as of its last fetch)."""
        tp = RdTopicPartition(*key)
        try:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self._next.get(key)
            if position is None:  # nothing read yet: where reading starts
                position = self.consumer.position([tp])[0].offset
                if position < 0:  # the beginning, or not known before the first fetch
                    position = low
        except KafkaException:  # no longer assigned
            return False
        return high >= 0 and position >= 0 and high > position

    def _ahead(self, key: Key, by_ms: float) -> bool:
        """Whether ``key`` is more than ``by_ms`` ahead of its partner, and the partner has
        records to read (a partner not read yet that has some is behind by any amount)."""
        partner = self._partner_of(key)
        if not self._has_more(partner):
            return False
        theirs = self._last_ts.get(partner)
        return theirs is None or self._last_ts[key] - theirs > by_ms

    def _should_pause(self, key: Key, now: float) -> bool:
        return (
            self._partner_of(key) not in self._paused
            and now >= self._exempt_until.get(key, 0.0)
            and self._ahead(key, self.max_lead_ms)
        )

    def _keep_paused(self, key: Key) -> bool:
        return key in self._last_ts and self._ahead(key, self.max_lead_ms / 2)


def group_messages(messages: Sequence[Message]) -> Batches:
    """The messages of one ``consume()`` by topic partition, each in offset order.

    librdkafka hands them over in runs of one partition's, interleaved. Error events are
    left out: the end of a partition is nothing to act on; a fatal error (the client can
    no longer work) raises :class:`~modelcanary.errors.BrokerUnavailableError`; any other
    is logged, librdkafka retries by itself (a broker down, a topic not there yet).
    """
    batches: Batches = {}
    topic: str | None = None
    partition = -1
    run: list[Message] = []
    for message in messages:
        if message.error() is not None:
            _consumer_error(message)
            continue
        t = message.topic()
        p = message.partition()
        if p != partition or t != topic:
            topic, partition = t, p  # type: ignore[assignment]
            run = batches.setdefault((t, p), [])  # type: ignore[arg-type]
        run.append(message)
    return batches


def _consumer_error(message: Message) -> None:
    error: RdKafkaError = message.error()  # type: ignore[assignment]
    if error.code() == RdKafkaError._PARTITION_EOF:
        return
    if error.fatal():
        raise BrokerUnavailableError(f"the evaluator's Kafka consumer failed for good: {error}")
    log.warning("Kafka consumer: %s (%s[%s])", error.str(), message.topic(), message.partition())


def feed(evaluator: Evaluator, batches: Mapping[Key, Sequence[Message]]) -> int:
    """Hand each topic partition's messages to ``evaluator`` (as consumed: no copy);
    returns how many."""
    handled = 0
    for (topic, partition), messages in batches.items():
        evaluator.handle_messages(topic, partition, messages)
        handled += len(messages)
    return handled


def _consume(consumer: Consumer, timeout_s: float) -> list[Message]:
    """Up to :data:`CONSUME_BATCH` messages: those ready now, or else the first to come
    within ``timeout_s`` and those ready with it.

    ``consume(n, timeout)`` waits until it has ``n`` messages or the timeout passes:
    catching up, every call would wait for a fetch whenever fewer than ``n`` were
    queued, while the fetcher threads could be fetching as the evaluator works.
    """
    messages = consumer.consume(CONSUME_BATCH, 0)
    if not messages:
        messages = consumer.consume(1, timeout_s)
        if messages:
            messages += consumer.consume(CONSUME_BATCH - 1, 0)
    return messages


def poll_into(
    consumer: Consumer,
    evaluator: Evaluator,
    aligner: TopicAligner | None,
    timeout_s: float,
    owned: Collection[Key] | None = None,
) -> int:
    """One round of the evaluator's loop: consume, hand over, keep the topics in step
    (unless ``aligner`` is None).

    ``owned`` (if given) holds the partitions this consumer holds when ``consume()``
    returns (kept up to date by the rebalance callbacks, which run inside it): records
    fetched for a partition before it was revoked are not ours to count (librdkafka
    drops them already; this is cheap to make sure of). Returns how many records were
    handed over.
    """
    batches = group_messages(_consume(consumer, timeout_s))
    if owned is not None:
        for key in [k for k in batches if k not in owned]:
            log.debug("dropping %d records of %s[%d], not ours any more", len(batches[key]), *key)
            del batches[key]
    handled = feed(evaluator, batches)
    if aligner is not None:
        aligner.observe(batches)
    return handled


class EvaluatorWorker:
    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.bootstrap = settings.resolved_kafka_bootstrap()
        self.topics = settings.topics
        self.key = settings.state_key.encode()
        self.snapshots_published = 0
        self._owned: set[Key] = set()  # updated in place: poll_into holds it
        self._closed = False
        self.consumer = self._new_consumer(settings)  # first: it refuses bad settings offline
        try:
            self.publisher = EventPublisher(self.bootstrap, client_id="modelcanary-evaluator")
        except BaseException:
            self.consumer.close()
            raise
        self.evaluator = Evaluator(
            self.topics, self.publisher, worker=self.worker_id,
            evidence_ttl_s=settings.evidence_ttl_s,
        )  # fmt: skip
        try:
            self._state_producer = KafkaProducer(
                bootstrap_servers=self.bootstrap.split(","),
                client_id=f"modelcanary-evaluator-state-{self.worker_id}",
                acks="all",
                max_request_size=MAX_SNAPSHOT_BYTES,
            )
        except KafkaError as exc:
            self.consumer.close()
            self.publisher.close()
            raise BrokerUnavailableError(
                f"Kafka at {self.bootstrap} is not reachable ({type(exc).__name__}): run "
                "`modelcanary up` or set MODELCANARY_KAFKA_BOOTSTRAP"
            ) from exc
        self.aligner = TopicAligner(self.consumer, self.topics)
        self.consumer.subscribe(
            [self.topics.predictions, self.topics.outcomes],
            on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost,
        )  # fmt: skip

    def _new_consumer(self, settings: Settings) -> Consumer:
        """The group member (it does not connect before the first ``consume()``)."""
        try:
            return Consumer(
                consumer_config(
                    self.bootstrap,
                    **{
                        "client.id": f"modelcanary-evaluator-{self.worker_id}",
                        "group.id": f"{settings.topics.prefix}.evaluator",
                        # Partition p of both topics to the same member (same counts).
                        "partition.assignment.strategy": "range",
                        "session.timeout.ms": settings.session_timeout_ms,
                        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                        "max.poll.interval.ms": settings.max_poll_interval_ms,
                    },
                )
            )
        except KafkaException as exc:
            raise ConfigError(
                f"the evaluator's Kafka consumer refuses its settings ({exc.args[0].str()}): "
                "check MODELCANARY_SESSION_TIMEOUT_MS, MODELCANARY_HEARTBEAT_MS and "
                "MODELCANARY_MAX_POLL_INTERVAL_MS"
            ) from exc

    # -- rebalance (run by librdkafka inside consume()) --------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        self.on_assigned(partitions)
        consumer.assign(partitions)
        self._owned.update((tp.topic, tp.partition) for tp in partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        self.on_revoked(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[RdTopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._owned.difference_update(keys)
        self.aligner.forget(keys)
        numbers = sorted({p for _, p in keys})
        for number in numbers:
            self.evaluator.revoke(number)  # its last snapshot stands; others may own it
        log.warning("%s lost partitions %s (its session expired): dropped without a "
                    "final snapshot", self.worker_id, numbers)  # fmt: skip

    def on_revoked(self, revoked: Iterable[RdTopicPartition]) -> None:
        """Publish the final snapshot of each revoked partition (acknowledged)."""
        keys = {(tp.topic, tp.partition) for tp in revoked}
        self._owned.difference_update(keys)
        self.aligner.forget(keys)
        numbers = sorted({p for _, p in keys})
        for number in numbers:
            snapshot = self.evaluator.revoke(number)
            if snapshot is not None:
                self._publish(snapshot)
        log.info("%s gave up partitions %s", self.worker_id, numbers)

    def on_assigned(self, assigned: list[RdTopicPartition]) -> None:
        """Restore newly owned partitions from their latest snapshots and set where
        reading starts on each ``TopicPartition`` (to be passed to ``assign()``)."""
        self.aligner.forget((tp.topic, tp.partition) for tp in assigned)
        numbers = sorted({tp.partition for tp in assigned} - set(self.evaluator.partitions))
        if not numbers:
            return
        latest = read_latest_snapshots(self.bootstrap, self.topics.evaluator_state, self.key)
        for number in numbers:
            starts = self.evaluator.assign(number, latest.get(number))
            for tp in assigned:
                if tp.partition == number and tp.topic in starts:
                    offset = starts[tp.topic]
                    tp.offset = OFFSET_BEGINNING if offset is None else offset
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
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != RdKafkaError._NO_OFFSET:  # nothing read since the last
                log.warning("offset commit failed (harmless: snapshots carry offsets): %s", exc)

    def poll_once(self, timeout_s: float = 0.2) -> int:
        """Consume what is there (waiting up to ``timeout_s``) and evaluate it; returns
        how many records."""
        return poll_into(self.consumer, self.evaluator, self.aligner, timeout_s, self._owned)

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
        """Leave the group (revoking: final snapshots are published), then close the
        producers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.consumer.close()
        finally:
            self._state_producer.flush(10)
            self._state_producer.close(5)
            self.publisher.flush()
            self.publisher.close()
