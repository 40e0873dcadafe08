"""Kafka outages under live traffic: users never wait, events are spooled and replayed once.

The test owns its broker. Phase 1 freezes it (SIGSTOP: a hung broker, its data kept);
phase 2 kills it and starts a new, empty one on the same port (the embedded broker keeps
nothing: the topics must be recreated before the spool is replayed). After each phase
every request answered since the phase began has exactly one event downstream, counted
by ``event_id``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from kafka import KafkaConsumer

from modelcanary.config import Settings
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.events import decode_prediction
from modelcanary.infra.broker import start_broker
from modelcanary.infra.processes import LOCALHOST, ProcessHandle, stop_process
from modelcanary.kafka_io import RecordConsumer
from modelcanary.launch import Component
from modelcanary.registry import Registry
from tests.conftest import free_port
from tests.integration.serving_stack import (
    serving_settings,
    start_clean_serving,
    wait_for_health,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A request that waited for Kafka would take the delivery timeout (1 s) or more.
MAX_REQUEST_S = 0.5


@dataclass
class Traffic:
    """Sequential /predict calls from a background thread, each with a unique request id."""

    client: httpx.Client
    row: dict[str, float]
    sent: list[tuple[str, float, float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            request_id = f"out-{uuid.uuid4().hex}"
            started = time.monotonic()
            status = self.client.post(
                "/predict", json={"features": self.row, "request_id": request_id}
            ).status_code
            self.sent.append((request_id, started, time.monotonic(), status))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()

    def since(self, t: float) -> list[str]:
        return [r for r, started, _, _ in list(self.sent) if started >= t]


@dataclass
class Outage:
    settings: Settings
    port: int
    log: Path
    broker: ProcessHandle
    serving: Component
    client: httpx.Client
    row: dict[str, float]


@pytest.fixture(scope="module")
def outage(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    root = tmp_path_factory.mktemp("outage")
    port = free_port()
    log = root / "broker.log"
    broker = start_broker(port, log, cwd=root)
    settings = serving_settings(
        root / "data", f"{LOCALHOST}:{port}", mlflow_uri, event_delivery_timeout_ms=1000
    )
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    model = settings.model_name
    registry.register_sklearn(model, train_variant("baseline", dataset), dataset.X_train.head(3))
    serving = start_clean_serving(settings, free_port())
    state = Outage(settings, port, log, broker, serving, None, dataset.X_test.iloc[0].to_dict())  # type: ignore[arg-type]
    try:
        with httpx.Client(base_url=serving.url or "", timeout=10) as client:
            state.client = client
            yield state
    finally:
        serving.stop()
        stop_process(state.broker, timeout_s=1.0)


def _events_by_request(settings: Settings, wanted: set[str]) -> dict[str, list[str]]:
    """Event ids per request id on the predictions topic, read from its beginning."""
    consumer = RecordConsumer(settings.kafka_bootstrap or "", [settings.topics.predictions])
    found: dict[str, list[str]] = {}
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            for record in consumer.poll(300):
                event = decode_prediction(record.value)
                found.setdefault(event.request_id, []).append(event.event_id)
            if wanted <= found.keys():
                # Anything still in flight (a duplicate) arrives within a moment.
                for record in consumer.poll(500):
                    event = decode_prediction(record.value)
                    found.setdefault(event.request_id, []).append(event.event_id)
                break
    finally:
        consumer.close()
    return found


def _assert_exactly_once(traffic: Traffic, since: float, found: dict[str, list[str]]) -> None:
    wanted = traffic.since(since)
    assert wanted, "no traffic in this phase"
    missing = [r for r in wanted if r not in found]
    assert not missing, f"{len(missing)} of {len(wanted)} requests have no event downstream"
    several = {r: ids for r in wanted if len(set(ids := found[r])) != 1}
    assert not several, f"requests with more than one distinct event: {several}"


def _assert_users_never_waited(traffic: Traffic) -> None:
    statuses = {status for *_, status in traffic.sent}
    assert statuses == {200}, statuses
    slowest = max(done - started for _, started, done, _ in traffic.sent)
    assert slowest < MAX_REQUEST_S, f"a request took {slowest:.3f} s"


def test_a_frozen_broker_spools_and_replays_every_event_once(outage: Outage) -> None:
    traffic = Traffic(outage.client, outage.row)
    thread = threading.Thread(target=traffic.run, daemon=True)
    begin = time.monotonic()
    thread.start()
    try:
        time.sleep(1.0)
        broker = psutil.Process(outage.broker.pid)
        broker.suspend()
        try:
            wait_for_health(outage.client, lambda h: h["status"] == "degraded", timeout_s=30)
            time.sleep(1.5)
            assert outage.client.get("/healthz").json()["kafka"] == "spooling"
        finally:
            broker.resume()
        wait_for_health(
            outage.client, lambda h: h["status"] == "ok" and h["spool_depth"] == 0, timeout_s=20
        )
        time.sleep(0.5)
    finally:
        traffic.stop()
        thread.join(5)
    _assert_users_never_waited(traffic)
    wanted = set(traffic.since(begin))
    found = _events_by_request(outage.settings, wanted)
    _assert_exactly_once(traffic, begin, found)


def test_a_restarted_empty_broker_gets_its_topics_back_then_the_spool(outage: Outage) -> None:
    traffic = Traffic(outage.client, outage.row)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        stop_process(outage.broker, timeout_s=0.5)  # SIGKILL after 0.5 s: everything is lost
        stopped = time.monotonic()
        wait_for_health(outage.client, lambda h: h["kafka"] == "spooling", timeout_s=10)
        time.sleep(1.5)
        outage.broker = start_broker(outage.port, outage.log, cwd=outage.log.parent)
        wait_for_health(
            outage.client, lambda h: h["status"] == "ok" and h["spool_depth"] == 0, timeout_s=20
        )
        time.sleep(0.5)
    finally:
        traffic.stop()
        thread.join(5)
    _assert_users_never_waited(traffic)
    settings = outage.settings
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = consumer.partitions_for_topic(settings.topics.predictions)
    finally:
        consumer.close()
    assert partitions is not None and len(partitions) == settings.partitions
    found = _events_by_request(settings, set(traffic.since(stopped)))
    _assert_exactly_once(traffic, stopped, found)
