"""The event publisher against a real broker that is missing, then appears."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelcanary.errors import BrokerUnavailableError
from modelcanary.events import OutcomeEvent, decode_outcome
from modelcanary.infra.broker import start_broker
from modelcanary.infra.processes import LOCALHOST, stop_process
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import EventPublisher, PublisherState, RecordConsumer
from modelcanary.spool import DiskSpool
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TOPIC = "publisher.outcomes"


def test_without_a_spool_an_unreachable_broker_is_an_error_at_once() -> None:
    with pytest.raises(BrokerUnavailableError, match="not reachable"):
        EventPublisher(f"{LOCALHOST}:{free_port()}", bootstrap_timeout_ms=1000)


def test_events_published_before_the_broker_exists_arrive_in_order(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"{LOCALHOST}:{port}"
    publisher = EventPublisher(
        bootstrap,
        spool=DiskSpool(tmp_path / "spool", max_bytes=10**7),
        prepare=lambda: ensure_topics(bootstrap, [TOPIC], 2, timeout_s=5),
        require_broker=False,
        retry_interval_s=0.2,
        linger_ms=10,
    )
    broker = None
    try:
        assert publisher.state is PublisherState.SPOOLING
        # One key: one partition, so the topic keeps the publishing order.
        events = [OutcomeEvent(model="m", request_id="same", label=i) for i in range(300)]
        for event in events[:200]:
            publisher.publish(TOPIC, event)
        deadline = time.monotonic() + 5
        while publisher.stats().spool_depth < 200:
            assert time.monotonic() < deadline, publisher.stats()
            time.sleep(0.05)
        broker = start_broker(port, tmp_path / "broker.log", cwd=tmp_path)
        for event in events[200:]:
            publisher.publish(TOPIC, event)
        assert publisher.flush(20.0), publisher.stats()
        assert publisher.state is PublisherState.HEALTHY
        consumer = RecordConsumer(bootstrap, [TOPIC])
        labels: list[int] = []
        deadline = time.monotonic() + 15
        try:
            while len(labels) < 300 and time.monotonic() < deadline:
                labels.extend(decode_outcome(r.value).label for r in consumer.poll(300))
        finally:
            consumer.close()
        assert labels == list(range(300))
    finally:
        publisher.close(1.0)
        if broker is not None:
            stop_process(broker, timeout_s=1.0)
