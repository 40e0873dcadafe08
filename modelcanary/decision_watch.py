"""Follow the decisions topic so that a serving replica applies a decision within a second.

Routers re-read MLflow periodically anyway; this watcher makes them fast. It reads every
partition of the decisions topic from its end (no consumer group: every replica and
every worker sees every decision) on a background thread, and hands each decision about
its model to ``on_decision`` — :meth:`modelcanary.router.ModelRouter.follow`, which
re-reads MLflow every 100 ms until the controller has written the new state.

While Kafka is unreachable the watcher retries every ``retry_s``; the periodic
reconcile keeps the router correct meanwhile, just slower.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from modelcanary.errors import EventError
from modelcanary.events import DecisionEvent, decode_decision
from modelcanary.kafka_io import RecordConsumer

log = logging.getLogger(__name__)


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

    def _run(self) -> None:
        consumer: RecordConsumer | None = None
        while not self._stop.is_set():
            if consumer is None:
                try:
                    consumer = RecordConsumer(
                        self.bootstrap,
                        [self.topic],
                        group_id=None,
                        from_beginning=False,
                        client_id=self.client_id,
                    )
                except Exception as exc:  # BrokerUnavailableError, KafkaError
                    log.info("decision watcher waits for Kafka: %s", exc)
                    self._stop.wait(self.retry_s)
                    continue
            for record in consumer.poll(timeout_ms=200):
                self._handle(record.value)
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
