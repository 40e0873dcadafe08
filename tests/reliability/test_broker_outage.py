"""The Kafka broker stopped for 30 s under live traffic, then started again.

The test owns its broker (the embedded one, on a free port) and kills it. The embedded
broker keeps nothing in memory across a restart, so the events of every request made
after the stop exist only in the serving replica's disk spool until the new broker is up;
serving must recreate the topics and replay the spool. Afterwards every request made
since the stop has exactly one prediction and one outcome event on the new broker
(counted by ``event_id``), and an evaluator started on it counts each exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.events import Arm
from modelcanary.infra.broker import start_broker
from modelcanary.infra.processes import LOCALHOST, ProcessHandle, stop_process
from modelcanary.launch import Component, start_serving, start_worker
from modelcanary.registry import Registry
from tests.conftest import free_port
from tests.reliability.stack import (
    FixedRateTraffic,
    evaluated_everything,
    events_of,
    gated_policy,
    snapshot_evidence,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0
RATE_PER_S = 20.0


@dataclass
class Outage:
    settings: Settings
    port: int
    log: Path
    broker: ProcessHandle
    serving: Component
    rollout_id: str
    row: dict[str, float]


@pytest.fixture(scope="module")
def outage(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    root = tmp_path_factory.mktemp("broker-outage")
    port = free_port()
    log = root / "broker.log"
    broker = start_broker(port, log, cwd=root)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=root / "data",
        kafka_bootstrap=f"{LOCALHOST}:{port}",
        mlflow_uri=mlflow_uri,
        model_name=f"outage-{tag}",
        topics=Topics(prefix=f"outage{tag}"),
        partitions=2,
        reconcile_interval_s=0.3,
        session_timeout_ms=1_000,
        heartbeat_interval_ms=300,
        max_poll_interval_ms=2_000,
        snapshot_interval_s=0.5,
        event_delivery_timeout_ms=1_000,  # spool soon after the broker goes
        challenger_timeout_ms=5_000,  # one event per request even on a busy machine
    )
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    sample = dataset.X_train.head(3)
    registry.register_sklearn(settings.model_name, train_variant("baseline", dataset), sample)
    v2 = registry.register_sklearn(settings.model_name, train_variant("good", dataset), sample)
    rollout = Controller(registry).start(settings.model_name, v2, gated_policy())
    serving = start_serving(settings, free_port())
    state = Outage(settings, port, log, broker, serving, rollout.rollout_id,
                   dataset.X_test.iloc[0].to_dict())  # fmt: skip
    try:
        yield state
    finally:
        serving.stop()
        stop_process(state.broker, timeout_s=1.0)


def test_a_30s_broker_outage_fails_no_user_and_delivers_every_event_once(
    outage: Outage, measure
) -> None:
    client = httpx.Client(base_url=outage.serving.url or "", timeout=10)
    traffic = FixedRateTraffic(outage.serving.url or "", outage.row, RATE_PER_S, tag="outage")
    traffic.start()
    try:
        time.sleep(3.0)
        stop_process(outage.broker, timeout_s=0.5)  # SIGKILL after 0.5 s: all data is lost
        stopped = time.monotonic()
        wait_until(lambda: client.get("/healthz").json()["kafka"] == "spooling", 15, "spooling")
        health = client.get("/healthz").json()
        assert health["status"] == "degraded", health
        time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
        spooled = client.get("/healthz").json()["spool_depth"]
        outage.broker = start_broker(outage.port, outage.log, cwd=outage.log.parent)
        restarted = time.monotonic()
        wait_until(
            lambda: (
                (h := client.get("/healthz").json())["status"] == "ok" and h["spool_depth"] == 0
            ),
            60,
            "the spool to be replayed",
        )
        replayed_s = time.monotonic() - restarted
        time.sleep(3.0)
    finally:
        calls = traffic.stop()
        client.close()
    during = [c for c in calls if stopped <= c.started < restarted]
    measure("requests", len(calls))
    measure("requests_during_outage", len(during))
    measure("spool_depth_before_restart", spooled)
    measure("replay_s", round(replayed_s, 1))
    measure("max_latency_ms_during_outage", round(max(c.predict_s for c in during) * 1000, 1))

    failed = traffic.failed()
    assert not failed, f"{len(failed)} users got an error, e.g. {failed[:3]}"
    assert len(during) >= 0.9 * RATE_PER_S * OUTAGE_S
    assert spooled >= len(during), "the outage was not bridged by the spool"

    # Events on the new broker, by request: distinct event ids and copies.
    since_stop = [c.request_id for c in calls if c.started >= stopped]
    predictions, outcomes = events_of(outage.settings, since_stop)
    prediction_ids: dict[str, set[str]] = defaultdict(set)
    outcome_ids: dict[str, set[str]] = defaultdict(set)
    for p in predictions:
        prediction_ids[p.request_id].add(p.event_id)
    for o in outcomes:
        outcome_ids[o.request_id].add(o.event_id)
    copies = len(predictions) + len(outcomes) - len({e.event_id for e in predictions + outcomes})
    measure("redelivered_copies", copies)
    lost = [r for r in since_stop if not prediction_ids[r] or not outcome_ids[r]]
    assert not lost, f"{len(lost)} of {len(since_stop)} requests lost an event, e.g. {lost[:3]}"
    several = [r for r in since_stop if len(prediction_ids[r]) != 1 or len(outcome_ids[r]) != 1]
    assert not several, f"requests with more than one event: {several[:5]}"

    # An evaluator on the new broker counts every event once.
    evaluator = start_worker(outage.settings, "evaluate")
    try:
        wait_until(lambda: evaluated_everything(outage.settings), 90, "the evaluator", 0.5)
    finally:
        evaluator.stop()
    summary = snapshot_evidence(outage.settings, outage.rollout_id).summary()
    distinct = {p.event_id: p for p in predictions if p.rollout_id == outage.rollout_id}
    per_arm = {arm.value: sum(p.arm is arm for p in distinct.values()) for arm in Arm}
    joinable = {r for r in prediction_ids if outcome_ids.get(r)}
    measure("evaluator_summary", summary)
    assert summary["predictions"] == per_arm
    assert summary["requests_joined"] == len(joinable)
