"""Kafka adapter: publish events, consume raw records. No decisions are made here.

Publishing never blocks the caller. :meth:`EventPublisher.publish` encodes the event
and appends it to an in-memory queue; :meth:`EventPublisher.publish_deferred` (serving's
prediction events) appends the event's values and leaves the encoding to the sender. One
background thread, the sender, does everything else in this order, one round at a time:

1. take every queued event, encoding those that were queued as values (JSON, see
   :mod:`modelcanary.events`);
2. if the broker is healthy and nothing is spooled: send them all and wait for the
   acknowledgements (at most ``delivery_timeout_ms``). Events that were not acknowledged
   are appended, in order, to the spool and the producer is discarded (its buffered
   batches aborted): the publisher is now *spooling*;
3. while spooling, new events go straight to the spool behind the older ones, and every
   ``retry_interval_s`` the sender probes the broker. Once it answers, ``prepare`` runs
   (serving recreates its topics there: a restarted memory-only broker has lost them), a
   new producer is built and the spool is replayed oldest first, in chunks, each chunk
   removed from the spool only once acknowledged. When the spool is empty the publisher
   is healthy again.

So events reach Kafka in the order they were published, and an event is never lost
while the spool has room (a full spool or queue refuses new events and counts them in
``dropped``). An event may be delivered twice: if the acknowledgement of a delivered
event is lost, if librdkafka cannot account for it after a purge (a request left half
written to a frozen broker: every unconfirmed record of the round is spooled again), or
if the process dies between delivery and the spool's commit. Consumers deduplicate by
``event_id``.

Without a spool argument an in-memory spool (:class:`~modelcanary.spool.MemorySpool`) is
used: outages are bridged while the process lives.

The producer is confluent-kafka (librdkafka): it encodes, batches and talks to the
brokers in C threads that do not hold the GIL, about 8 us of CPU per event against about
80 us for kafka-python's pure-Python producer — which a serving worker would pay on the
thread that answers requests (see the README's "Serving overhead"). The evaluator's
consumer and the decision watcher use librdkafka too; :class:`RecordConsumer` (judge,
controller, demo) is kafka-python. Client errors are translated to
:class:`BrokerUnavailableError` where a caller sees them (construction with
``require_broker=True``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec
from confluent_kafka import KafkaError as ProducerError
from confluent_kafka import KafkaException, Message, Producer
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from modelcanary.errors import BrokerUnavailableError, EventError
from modelcanary.events import Event, encode
from modelcanary.spool import MemorySpool, Spool, SpoolRecord

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection refused while Kafka is down, ...), at its levels.
_LIBRDKAFKA_LOG = logging.getLogger("modelcanary.kafka_io.librdkafka")

#: librdkafka error codes a retry cannot fix: such an event is dropped and counted.
_PERMANENT = frozenset(
    {
        ProducerError.MSG_SIZE_TOO_LARGE,
        ProducerError.INVALID_MSG_SIZE,
        ProducerError.TOPIC_EXCEPTION,
        ProducerError.TOPIC_AUTHORIZATION_FAILED,
    }
)
REPLAY_CHUNK = 500
MAX_ROUND = 5_000
_new_tuple = tuple.__new__


def _unavailable(bootstrap: str, exc: Exception) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"Kafka at {bootstrap} is not reachable ({type(exc).__name__}): run `modelcanary up` "
        "or set MODELCANARY_KAFKA_BOOTSTRAP to your brokers"
    )


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


_JSON = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """The JSON of :func:`modelcanary.events.encode`, about 5x faster for flat events.

    ``events.encode`` goes through ``dataclasses.asdict``, which deep-copies every nested
    value, and the ``json`` module, whose float formatting costs ~0.4 us a number (a
    prediction event carries every feature). Here the event's own attribute dict (our
    events' fields are JSON values already) goes to msgspec. The result decodes to the
    same values, NaN and infinities written as null as there; the bytes differ where
    ``json`` escapes non-ASCII (msgspec writes UTF-8) and in float notation (``1e16``
    for ``1e+16``, ``0.00001`` for ``1e-05``). Whatever msgspec refuses (a nested
    dataclass, a lone surrogate) goes to ``events.encode``, which serialises it or
    raises :class:`EventError`.
    """
    names = _FIELD_NAMES.get(type(event))
    if names is None:
        names = _FIELD_NAMES[type(event)] = tuple(f.name for f in dataclasses.fields(event))
    fields = getattr(event, "__dict__", None)
    if fields is None or len(fields) != len(names):  # slots, or attributes beyond the fields
        fields = {name: getattr(event, name) for name in names}
    try:
        return _JSON.encode(fields)
    except (TypeError, ValueError, OverflowError):
        return encode(event)


class PublisherState(StrEnum):
    """Where the sender is: see the module docstring."""

    CONNECTING = "connecting"
    HEALTHY = "ok"
    SPOOLING = "spooling"
    CLOSED = "closed"


@dataclass(frozen=True)
class PublisherStats:
    """A consistent-enough snapshot of a publisher's counters (for health and metrics)."""

    state: PublisherState
    queued: int
    sent: int
    delivered: int
    failed: int
    spooled: int
    replayed: int
    dropped: int
    spool_depth: int
    spool_bytes: int
    delivered_by_topic: dict[str, int]


class _Marker:
    """Placed in the queue by :meth:`EventPublisher.flush`; set once all before it is done."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class DeferredRecord(NamedTuple):
    """A queued event the sender encodes: ``encode(data)`` gives the record's value, or
    None if the event cannot be encoded (``encode`` logs why; the event counts as dropped).
    """

    topic: str
    key: str
    encode: Callable[[Any], bytes | None]
    data: Any


class EventPublisher:
    """Publishes events keyed by their ``key`` (request_id for predictions and outcomes).

    ``require_broker=True`` (the default) connects in the constructor and raises
    :class:`BrokerUnavailableError` if the broker cannot be reached; ``False`` starts
    spooling instead and connects in the background (what a serving replica wants: it
    must answer users while Kafka is down). ``linger_ms`` is how long the sender waits
    for more events before a round; larger values cost less CPU per event.
    ``bootstrap_timeout_ms`` bounds each attempt to reach the brokers; ``max_block_ms`` is
    accepted for compatibility and unused: nothing the caller does ever blocks.
    """

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "modelcanary",
        max_block_ms: int = 2_000,
        bootstrap_timeout_ms: int = 10_000,
        linger_ms: int = 5,
        *,
        spool: Spool | None = None,
        prepare: Callable[[], None] | None = None,
        require_broker: bool = True,
        delivery_timeout_ms: int = 10_000,
        queue_max: int = 100_000,
        retry_interval_s: float = 1.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.delivered_by_topic: dict[str, int] = {}
        self._max_block_ms = max_block_ms
        self._bootstrap_timeout_ms = bootstrap_timeout_ms
        self._linger_s = linger_ms / 1000.0
        self._delivery_timeout_s = delivery_timeout_ms / 1000.0
        self._retry_interval_s = retry_interval_s
        self._queue_max = queue_max
        self._spool: Spool = spool if spool is not None else MemorySpool(queue_max)
        self._prepare = prepare
        self._queue: deque[SpoolRecord | DeferredRecord | _Marker] = deque()
        self._markers: list[_Marker] = []
        self._overflow = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = False  # _stop.is_set(), read without a call on every publish
        self._producer: Producer | None = None
        self._next_attempt = 0.0
        self.last_error: str | None = None
        self.state = PublisherState.CONNECTING
        if require_broker:
            producer = self._new_producer()
            try:
                producer.list_topics(timeout=bootstrap_timeout_ms / 1000.0)
            except KafkaException as exc:
                raise _unavailable(bootstrap, exc) from exc
            self._producer = producer
            self.state = PublisherState.HEALTHY
        else:
            self._connect()
        self._thread = threading.Thread(target=self._run, name=f"{client_id}-sender", daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------
    def publish(self, topic: str, event: Event) -> None:
        """Encode one event and queue it for delivery; never raises, never blocks."""
        try:
            record = SpoolRecord(topic, event.key.encode(), encode_event(event))
        except (EventError, UnicodeError, AttributeError) as exc:
            self._overflow += 1
            log.error("dropping an event that cannot be encoded: %s", exc)
            return
        self._enqueue(record)

    def publish_deferred(
        self, topic: str, key: str, encode: Callable[[Any], bytes | None], data: Any
    ) -> None:
        """Queue an event as values; the sender encodes it with ``encode(data)``.

        For events made on every request: the request's thread only appends a tuple
        (made with ``tuple.__new__``: a named tuple's own constructor is a Python call).
        ``data`` must not change once handed over.
        """
        self._enqueue(_new_tuple(DeferredRecord, (topic, key, encode, data)))

    def _enqueue(self, item: SpoolRecord | DeferredRecord) -> None:
        queued = len(self._queue)
        if queued >= self._queue_max or self._closing:
            self._overflow += 1  # rare; a lost increment under a race only undercounts
            return
        self._queue.append(item)
        if queued == MAX_ROUND:  # a full round is waiting: do not wait for the linger
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every event published so far is delivered; False after ``timeout_s``.

        Events that could not be delivered in time stay queued or spooled.
        """
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (for at most ``timeout_s``), spool the rest, then stop.

        While spooling it does not wait for the broker: the queue goes to the spool at once.
        """
        if self.state is PublisherState.HEALTHY:
            self.flush(timeout_s)
        self._closing = True
        self._stop.set()
        self._wake.set()
        # A round under way may wait up to the delivery timeout for acks before spooling
        # what is unacknowledged: closing the spool under it would lose those events.
        self._thread.join(timeout_s + self._delivery_timeout_s)
        if self._producer is not None:
            self._abort_producer()
        self._spool.close()
        self.state = PublisherState.CLOSED

    @property
    def spooling(self) -> bool:
        return self.state is not PublisherState.HEALTHY

    def stats(self) -> PublisherStats:
        return PublisherStats(
            state=self.state,
            queued=len(self._queue),
            sent=self.sent,
            delivered=self.delivered,
            failed=self.failed,
            spooled=self.spooled,
            replayed=self.replayed,
            dropped=self.dropped + self._overflow + self._spool.refused,
            spool_depth=self._spool.depth,
            spool_bytes=self._spool.size_bytes,
            delivered_by_topic=dict(self.delivered_by_topic),
        )

    # -- the sender thread ----------------------------------------------------------
    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._round()
            except Exception:  # never let the sender die: log and keep going
                log.exception("event sender round failed; retrying")
                self._discard_producer("sender error")
            if stopping and not self._queue:
                return
            if len(self._queue) < MAX_ROUND:  # else a backlog: go on at once
                self._wake.wait(max(self._linger_s, 0.001))
                self._wake.clear()

    def _round(self) -> None:
        records, markers = self._take()
        self._markers.extend(markers)
        try:
            if self._producer is None:
                self._connect()
            if self._producer is not None and self._spool.depth == 0:
                self._deliver(records)
                records = []
            else:
                self._to_spool(records)
                records = []
                if self._producer is not None:
                    self._replay()
        except Exception:
            self._to_spool(records)  # what was taken is never lost (a duplicate at worst)
            raise
        if self._spool.depth == 0 and self._producer is not None:
            for marker in self._markers:
                marker.done.set()
            self._markers.clear()

    def _take(self) -> tuple[list[SpoolRecord], list[_Marker]]:
        records: list[SpoolRecord] = []
        markers: list[_Marker] = []
        queue = self._queue
        for _ in range(min(len(queue), MAX_ROUND)):
            item = queue.popleft()
            if type(item) is DeferredRecord:
                record = self._encoded(item)
                if record is not None:
                    records.append(record)
            elif isinstance(item, _Marker):
                markers.append(item)
            else:
                records.append(item)
        return records, markers

    def _encoded(self, item: DeferredRecord) -> SpoolRecord | None:
        """The record of a deferred event; None (counted as dropped) if it has no bytes."""
        try:
            value = item.encode(item.data)
            if value is not None:
                return _new_tuple(SpoolRecord, (item.topic, item.key.encode(), value))
        except Exception:  # a bug in an encoder must not stop the sender or lose the round
            log.exception("dropping an event that cannot be encoded")
        self.dropped += 1
        return None

    def _deliver(self, records: list[SpoolRecord]) -> None:
        if not records:
            return
        failed = self._send_all(records)
        if failed:
            self._to_spool(failed)
            self._discard_producer(f"{len(failed)} event(s) not acknowledged")

    def _to_spool(self, records: list[SpoolRecord]) -> None:
        if records:
            self.spooled += self._spool.append(records)

    def _replay(self) -> None:
        """Send the spool oldest first; stop at the first chunk that fails."""
        while self._spool.depth and not self._stop.is_set():
            chunk = self._spool.peek(REPLAY_CHUNK)
            if not chunk:
                return
            failed = self._send_all(chunk)
            if failed:
                self._discard_producer(f"replay: {len(failed)} event(s) not acknowledged")
                return
            self._spool.commit(len(chunk))
            self.replayed += len(chunk)
            # Keep the order: what arrived meanwhile goes behind the replayed records.
            records, markers = self._take()
            self._to_spool(records)
            self._markers.extend(markers)
        if self._spool.depth == 0 and self._producer is not None:
            log.info("event spool replayed; publishing to Kafka again")
            self.state = PublisherState.HEALTHY

    def _send_all(self, records: list[SpoolRecord]) -> list[SpoolRecord]:
        """Send and wait for acknowledgements; returns the records to retry, in order.

        What is still unacknowledged after ``delivery_timeout_ms`` is purged from the
        producer, so that it cannot arrive later behind the replayed copies' backs. If the
        producer still holds messages after the purge, every record not reported failed is
        returned too (see below); a non-empty result means the caller must discard the
        producer, so that no producer outlives a round with messages in it.
        """
        producer = self._producer
        assert producer is not None
        # Per record: True (handed over, no failure reported: delivered), None (not handed
        # over: retried) or librdkafka's error. librdkafka reports failures only
        # ("delivery.report.only.error"): a report per message would take the GIL back
        # from the request thread per message.
        outcomes: list[object] = [True] * len(records)
        reported: list[tuple[ProducerError, bytes]] = []

        def on_failure(error: ProducerError, message: Message) -> None:
            reported.append((error, message.value()))

        by_topic: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            indices = by_topic.get(record.topic)
            if indices is None:
                indices = by_topic[record.topic] = []
            indices.append(index)
        for topic, indices in by_topic.items():
            batch = [{"key": records[i].key, "value": records[i].value} for i in indices]
            try:
                queued = producer.produce_batch(topic, batch, on_delivery=on_failure)
            except (BufferError, KafkaException) as exc:  # all retried: duplicates at worst
                self.last_error = str(exc) or "librdkafka's queue is full"
                for i in indices:
                    outcomes[i] = None
                continue
            if queued < len(batch):  # the ones not queued carry their error
                for i, message in zip(indices, batch, strict=True):
                    if "_error" in message:
                        outcomes[i] = message["_error"]
        clean = all(outcome is True for outcome in outcomes)
        self.sent += len(records) if clean else sum(outcome is True for outcome in outcomes)
        held = producer.flush(self._delivery_timeout_s)
        if held > 0:
            producer.purge(in_queue=True, in_flight=True)
            held = producer.flush(0)  # serves the purged messages' reports
        # No report means delivered only once librdkafka holds nothing more. A purge skips
        # a request partly written to its socket (a frozen broker stops reading mid-request):
        # its messages get no report now, and never will once the producer is discarded.
        # We cannot tell which records they are, so every record without a report is retried
        # (and the caller discards this producer): a duplicate at worst, never a loss.
        unsure = held > 0
        if unsure:
            self.last_error = f"{held} message(s) still unacknowledged after a purge"
        if clean and not reported and not unsure:
            self.delivered += len(records)
            counts = self.delivered_by_topic
            for topic, indices in by_topic.items():
                counts[topic] = counts.get(topic, 0) + len(indices)
            return []
        if reported:  # reports name a message by its value: events' values are unique
            errors = {value: error for error, value in reported}
            for index, record in enumerate(records):
                if outcomes[index] is True and record.value in errors:
                    outcomes[index] = errors[record.value]
        retry: list[SpoolRecord] = []
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome is True and not unsure:
                self.delivered += 1
                self.delivered_by_topic[record.topic] = (
                    self.delivered_by_topic.get(record.topic, 0) + 1
                )
            elif isinstance(outcome, ProducerError) and outcome.code() in _PERMANENT:
                self.dropped += 1
                log.error("dropping an event Kafka will never take: %s", outcome.str())
            else:
                self.failed += 1
                if isinstance(outcome, ProducerError):
                    self.last_error = outcome.str()
                retry.append(record)
        return retry

    # -- the producer's lifecycle ---------------------------------------------------
    def _new_producer(self) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "client.id": self.client_id,
                "acks": "all",
                "linger.ms": 5,  # the sender batches already; flush() sends at once
                "message.timeout.ms": max(100, int(self._delivery_timeout_s * 1000)),
                "socket.connection.setup.timeout.ms": self._bootstrap_timeout_ms,
                "reconnect.backoff.max.ms": 1_000,
                "queue.buffering.max.messages": max(MAX_ROUND, REPLAY_CHUNK) * 4,
                "delivery.report.only.error": True,
                "logger": _LIBRDKAFKA_LOG,
            }
        )

    def _reachable(self) -> bool:
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            with (
                contextlib.suppress(OSError, ValueError),
                socket.create_connection((host or "localhost", int(port)), timeout=0.5),
            ):
                return True
        return False

    def _connect(self) -> None:
        """One attempt (when due): probe, ``prepare``, new producer."""
        now = time.monotonic()
        if now < self._next_attempt:
            return
        self._next_attempt = now + self._retry_interval_s
        if not self._reachable():
            self._enter_spooling(f"no broker answers at {self.bootstrap}")
            return
        try:
            if self._prepare is not None:
                self._prepare()
            producer = self._new_producer()
            producer.list_topics(timeout=self._bootstrap_timeout_ms / 1000.0)
            self._producer = producer
        except Exception as exc:  # BrokerUnavailableError, KafkaException, InfraError
            self._enter_spooling(f"{type(exc).__name__}: {exc}")
            return
        if self._spool.depth == 0:
            if self.state is not PublisherState.HEALTHY:
                log.info("connected to Kafka at %s", self.bootstrap)
            self.state = PublisherState.HEALTHY
        else:
            log.info("Kafka at %s is back: replaying %d spooled event(s)", self.bootstrap,
                     self._spool.depth)  # fmt: skip

    def _enter_spooling(self, reason: str) -> None:
        if self.state is not PublisherState.SPOOLING:
            log.warning("Kafka unavailable (%s): spooling events until it is back", reason)
        self.last_error = reason
        self.state = PublisherState.SPOOLING

    def _discard_producer(self, reason: str) -> None:
        self._abort_producer()
        self._next_attempt = time.monotonic() + self._retry_interval_s
        self._enter_spooling(reason)

    def _abort_producer(self) -> None:
        """Drop the producer; messages it still holds are purged, never sent."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        with contextlib.suppress(Exception):
            producer.purge(in_queue=True, in_flight=True)
            producer.flush(0)


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
        max_poll_interval_ms: int = 300_000,
        max_fetch_bytes: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        fetch = (
            {"fetch_max_bytes": max_fetch_bytes, "max_partition_fetch_bytes": max_fetch_bytes}
            if max_fetch_bytes
            else {}
        )
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap.split(","),
                client_id=client_id,
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest" if from_beginning else "latest",
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                max_poll_records=2_000,
                reconnect_backoff_max_ms=1_000,
                **fetch,
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
