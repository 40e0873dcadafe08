"""The event publisher against a broker frozen mid-traffic (SIGSTOP), then thawed (SIGCONT).

A frozen broker accepts connections and stops reading: a produce request can be left half
written in its socket, and librdkafka's purge skips such a request, reporting nothing for
its messages. The publisher used to count those as delivered and lose them when it
discarded the producer (issue 5). Every event must now arrive; a duplicate (same
``event_id``) is allowed, a loss is not. This is the publisher alone, without serving
(tests/integration/test_serving_outage.py freezes the broker under a real `bentoml serve`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from modelcanary.events import OutcomeEvent, decode_outcome
from modelcanary.infra.broker import start_broker
from modelcanary.infra.processes import LOCALHOST, ProcessHandle, stop_process
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import EventPublisher, PublisherState, RecordConsumer
from modelcanary.spool import DiskSpool
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FREEZES = 2


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, ProcessHandle]]:
    port = free_port()
    handle = start_broker(port, tmp_path / "broker.log", cwd=tmp_path)
    try:
        yield f"{LOCALHOST}:{port}", handle
    finally:
        stop_process(handle, timeout_s=1.0)


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _read_back(bootstrap: str, topic: str, wanted: set[str]) -> dict[str, list[str]]:
    """Event ids per request id, read from the topic's beginning until all are there."""
    found: dict[str, list[str]] = {}
    consumer = RecordConsumer(bootstrap, [topic])
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and not wanted <= found.keys():
            for record in consumer.poll(300):
                event = decode_outcome(record.value)
                found.setdefault(event.request_id, []).append(event.event_id)
    finally:
        consumer.close()
    return found


def test_a_frozen_broker_loses_no_event_in_flight(
    broker: tuple[str, ProcessHandle], tmp_path: Path
) -> None:
    bootstrap, handle = broker
    topic = f"frozen{uuid.uuid4().hex[:8]}.outcomes"
    ensure_topics(bootstrap, [topic], 3)
    publisher = EventPublisher(
        bootstrap,
        linger_ms=200,  # as serving: rounds of a few events, always some in flight
        spool=DiskSpool(tmp_path / "spool", max_bytes=10**8),
        prepare=lambda: ensure_topics(bootstrap, [topic], 3, timeout_s=5),
        require_broker=False,
        delivery_timeout_ms=1_000,
        retry_interval_s=0.3,
    )
    sent: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            request_id = f"r-{uuid.uuid4().hex}"
            publisher.publish(topic, OutcomeEvent(model="m", request_id=request_id, label=1))
            sent.append(request_id)
            time.sleep(0.01)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    process = psutil.Process(handle.pid)
    try:
        for _ in range(FREEZES):
            time.sleep(1.0)
            process.suspend()
            try:
                _wait(lambda: publisher.state is PublisherState.SPOOLING, "spooling")
                time.sleep(1.0)
            finally:
                process.resume()
            _wait(
                lambda: (
                    publisher.state is PublisherState.HEALTHY and publisher.stats().spool_depth == 0
                ),
                "the spool replayed",
            )
    finally:
        stop.set()
        thread.join(5)
    assert publisher.flush(20), publisher.stats()
    stats = publisher.stats()
    publisher.close()
    found = _read_back(bootstrap, topic, set(sent))
    missing = [i for i, request_id in enumerate(sent) if request_id not in found]
    assert not missing, f"{len(missing)} of {len(sent)} events lost (at {missing[:10]}); {stats}"
    several = {r: ids for r in sent if len(set(ids := found[r])) != 1}
    assert not several, f"requests with more than one distinct event: {several}"
    assert stats.failed > 0 and stats.replayed > 0 and stats.dropped == 0, stats
