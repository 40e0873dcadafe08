"""Follow the decisions topic so that a serving replica applies a decision within a second.

Routers re-read MLflow periodically anyway; this watcher makes them fast. It reads every
partition of the decisions topic from its end (no consumer group: every replica and
every worker sees every decision) on a background thread, and hands each decision about
its model to ``on_decision`` — :meth:`modelcanary.router.ModelRouter.follow`, which
re-reads MLflow every 100 ms until the controller has written the new state.

It uses librdkafka (confluent-kafka), whose fetching runs in C threads: a kafka-python
consumer polling in a serving worker costs about 5 ms of GIL time a second even when no
decision comes. While Kafka is unreachable, or the topic does not exist yet, it retries
every ``retry_s``; the periodic reconcile keeps the router correct meanwhile, only slower.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from modelcanary.errors import EventError
from modelcanary.events import DecisionEvent, decode_decision

log = logging.getLogger(__name__)
POLL_S = 0.5


class DecisionWatcher:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        model: str,
        on_decision: Callable[[DecisionEvent], object],
        *,
        retry_s: float = 2.0,
        client_id: str = "modelcanary-serving",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.model = model
        self.on_decision = on_decision
        self.retry_s = retry_s
        self.client_id = client_id
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _subscribe(self) -> Consumer | None:
        """A consumer assigned to the end of every partition, or None (retry later)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "client.id": self.client_id,
                # Required by librdkafka, unused: partitions are assigned, never committed.
                "group.id": f"modelcanary-router-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "allow.auto.create.topics": False,
                "logger": log,
            }
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=5.0)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise KafkaException(f"topic {self.topic} does not exist yet")
            consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in topic.partitions])
        except KafkaException as exc:
            log.info("decision watcher waits for Kafka: %s", exc)
            consumer.close()
            return None
        return consumer

    def _run(self) -> None:
        consumer: Consumer | None = None
        while not self._stop.is_set():
            if consumer is None:
                consumer = self._subscribe()
                if consumer is None:
                    self._stop.wait(self.retry_s)
                    continue
            message = consumer.poll(POLL_S)
            if message is None:
                continue
            if message.error() is not None:
                log.debug("decision watcher: %s", message.error())
                continue
            self._handle(message.value() or b"")
        if consumer is not None:
            consumer.close()

    def _handle(self, raw: bytes) -> None:
        try:
            decision = decode_decision(raw)
        except EventError as exc:
            log.warning("ignoring a malformed decision: %s", exc)
            return
        if decision.model != self.model:
            return
        self.seen += 1
        try:
            self.on_decision(decision)
        except Exception:
            log.exception("applying decision %s failed", decision.event_id)
