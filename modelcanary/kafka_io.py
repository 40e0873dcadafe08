"""Kafka adapter: publish events, consume raw records. No decisions are made here.

kafka-python errors are translated to :class:`BrokerUnavailableError` at construction.
A send never blocks the caller for longer than ``max_block_ms``; delivery failures are
reported through the producer's ``failed`` counter and the log, never silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from modelcanary.errors import BrokerUnavailableError
from modelcanary.events import Event, encode

log = logging.getLogger(__name__)


def _unavailable(bootstrap: str, exc: Exception) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"Kafka at {bootstrap} is not reachable ({type(exc).__name__}): run `modelcanary up` "
        "or set MODELCANARY_KAFKA_BOOTSTRAP to your brokers"
    )


class EventPublisher:
    """Publishes events keyed by their ``key`` (request_id for predictions and outcomes)."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "modelcanary",
        max_block_ms: int = 2_000,
        bootstrap_timeout_ms: int = 10_000,
        linger_ms: int = 5,
    ) -> None:
        self.bootstrap = bootstrap
        self._lock = threading.Lock()
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                client_id=client_id,
                acks="all",
                linger_ms=linger_ms,
                max_block_ms=max_block_ms,
                reconnect_backoff_max_ms=1_000,
                bootstrap_timeout_ms=bootstrap_timeout_ms,
            )
        except KafkaError as exc:
            raise _unavailable(bootstrap, exc) from exc

    def publish(self, topic: str, event: Event) -> None:
        """Queue one event for delivery; returns at once (or after ``max_block_ms``)."""
        payload = encode(event)
        key = event.key.encode()  # type: ignore[union-attr]
        try:
            future = self._producer.send(topic, key=key, value=payload)
        except KafkaError as exc:
            self._count_failure(topic, exc)
            return
        with self._lock:
            self.sent += 1
        future.add_callback(self._on_delivered)
        future.add_errback(lambda exc: self._count_failure(topic, exc))

    def _on_delivered(self, _metadata: object) -> None:
        with self._lock:
            self.delivered += 1

    def _count_failure(self, topic: str, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
        log.warning("event for %s not delivered: %s", topic, exc)

    def flush(self, timeout_s: float = 10.0) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("flush did not complete: %s", exc)

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("producer close did not complete: %s", exc)


@dataclass(frozen=True)
class Record:
    """One consumed record, still raw: decoding (and dead-lettering) is the caller's job."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class RecordConsumer:
    """Reads raw records from topics, as a member of a consumer group or by manual assignment.

    ``group_id=None`` assigns every partition of the topics to this consumer (no group
    join, no committed offsets): what a single evaluator or a router listening to every
    decision wants. With a group, offsets are committed only when :meth:`commit` is called.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        group_id: str | None = None,
        from_beginning: bool = True,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        client_id: str = "modelcanary",
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap.split(","),
                client_id=client_id,
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest" if from_beginning else "latest",
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_records=2_000,
                reconnect_backoff_max_ms=1_000,
            )
            if group_id is None:
                partitions = [
                    TopicPartition(topic, p)
                    for topic in self.topics
                    for p in sorted(self._consumer.partitions_for_topic(topic) or {0})
                ]
                self._consumer.assign(partitions)
                if not from_beginning:
                    self._consumer.seek_to_end(*partitions)
            else:
                self._consumer.subscribe(list(self.topics))
        except KafkaError as exc:
            raise _unavailable(bootstrap, exc) from exc

    def poll(self, timeout_ms: int = 200) -> Iterator[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            log.warning("poll failed (will retry): %s", exc)
            return
        for tp, messages in batches.items():
            for m in messages:
                yield Record(tp.topic, tp.partition, m.offset, m.key, m.value)

    def commit(self) -> None:
        try:
            self._consumer.commit()
        except KafkaError as exc:
            log.warning("offset commit failed (records may be re-read): %s", exc)

    def close(self) -> None:
        self._consumer.close(autocommit=False)
