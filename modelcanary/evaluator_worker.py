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
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from modelcanary.config import Settings
from modelcanary.errors import BrokerUnavailableError, EventError
from modelcanary.evaluator import Evaluator
from modelcanary.kafka_io import EventPublisher, Record
from modelcanary.snapshot import Snapshot, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


def read_latest_snapshots(
    bootstrap: str, topic: str, key: bytes, timeout_s: float = 30.0
) -> dict[int, Snapshot]:
    """The newest snapshot of every evaluated partition, read from the state topic."""
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
        raw: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(f"could not read {topic} to its end in {timeout_s} s")
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    if m.key is not None and m.value is not None:
                        raw[m.key] = m.value
    finally:
        consumer.close(autocommit=False)
    latest: dict[int, Snapshot] = {}
    for value in raw.values():
        try:
            snapshot = decode_snapshot(value, key)
        except EventError as exc:
            log.error("ignoring an unreadable snapshot in %s: %s", topic, exc)
            continue
        current = latest.get(snapshot.partition)
        if current is None or snapshot.written_at >= current.written_at:
            latest[snapshot.partition] = snapshot
    return latest


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
                max_poll_records=5_000,
            )
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"Kafka at {self.bootstrap} is not reachable ({type(exc).__name__}): run "
                "`modelcanary up` or set MODELCANARY_KAFKA_BOOTSTRAP"
            ) from exc
        self.consumer.subscribe([self.topics.predictions, self.topics.outcomes],
                                listener=_Rebalance(self))  # fmt: skip

    # -- rebalance -------------------------------------------------------------------
    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        for number in sorted({tp.partition for tp in revoked}):
            snapshot = self.evaluator.revoke(number)
            if snapshot is not None:
                self._publish(snapshot)
        log.info("%s gave up partitions %s", self.worker_id,
                 sorted({tp.partition for tp in revoked}))  # fmt: skip

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
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
        handled = 0
        for tp, messages in self.consumer.poll(timeout_ms=timeout_ms).items():
            for m in messages:
                self.evaluator.handle(Record(tp.topic, tp.partition, m.offset, m.key, m.value))
                handled += 1
        return handled

    def run(self, stop: threading.Event) -> None:
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
