"""A rollout driven end to end with real processes: a manual gate, the admin API and its
token, and the controller and a serving replica killed and restarted mid-rollout."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from modelcanary.admin_client import AdminClient
from modelcanary.config import Settings, Topics
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.infra.topics import ensure_topics
from modelcanary.launch import Component, start_serving, start_worker
from modelcanary.policy import default_policy, policy_from_dict
from modelcanary.registry import Registry
from modelcanary.rollout_store import RolloutStore
from modelcanary.simulate import TrafficConfig, TrafficSimulator
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "lifecycle-token"


@dataclass
class Running:
    settings: Settings
    port: int
    components: dict[str, Component] = field(default_factory=dict)

    def start(self, name: str) -> None:
        if name == "serving":
            self.components[name] = start_serving(self.settings, self.port)
        else:
            self.components[name] = start_worker(self.settings, name)

    def kill(self, name: str) -> None:
        component = self.components.pop(name)
        os.kill(component.process.pid, signal.SIGKILL)
        component.stop(timeout_s=5)  # reaps the rest of its process group

    def stop_all(self) -> None:
        for component in self.components.values():
            component.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@pytest.fixture
def stack(kafka_bootstrap: str, mlflow_uri: str, tmp_path) -> Iterator[Running]:
    model = f"life-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, mlflow_uri=mlflow_uri,
        model_name=model, topics=Topics(f"l{uuid.uuid4().hex[:6]}"), partitions=2,
        reconcile_interval_s=0.5, session_timeout_ms=1_000, heartbeat_interval_ms=300,
        max_poll_interval_ms=2_000, snapshot_interval_s=0.5, admin_token=TOKEN,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    for variant in ("baseline", "good"):
        registry.register_sklearn(model, train_variant(variant, dataset), dataset.X_train.head(2))
    running = Running(settings, free_port())
    try:
        for name in ("serving", "evaluate", "control"):
            running.start(name)
        yield running
    finally:
        running.stop_all()


def test_manual_gate_restarts_and_the_admin_token(stack: Running) -> None:
    settings, model = stack.settings, stack.settings.model_name
    url = f"http://127.0.0.1:{stack.port}"
    policy = default_policy().to_dict()
    policy["steps"] = [
        {"traffic_fraction": 0.3, "min_samples": 30, "min_duration_s": 1,
         "max_duration_s": 600, "requires_approval": True},
        {"traffic_fraction": 0.6, "min_samples": 30, "min_duration_s": 1, "max_duration_s": 600},
    ]  # fmt: skip
    policy_from_dict(policy)  # valid before we send it

    anonymous = httpx.post(f"{url}/admin/rollout/act", json={"model": model, "action": "pause"})
    assert anonymous.status_code == 401
    admin = AdminClient(url, TOKEN)
    started = admin.call("/admin/rollout/start", {"model": model, "version": "2",
                                                   "policy": policy})["rollout"]  # fmt: skip
    assert started["label"] == "running:0"

    dataset = load_demo_dataset()
    rows = dataset.X_test.to_dict(orient="records")
    labels = [int(y) for y in dataset.y_test]
    stop = threading.Event()
    simulator = TrafficSimulator(url, rows, labels, TrafficConfig(rate_per_s=120, seed=3))
    traffic = threading.Thread(
        target=lambda: asyncio.run(simulator.run(stop.is_set, 300)), daemon=True
    )
    traffic.start()
    store = RolloutStore(Registry(settings.resolved_mlflow_uri()))

    def latest_reason() -> str:
        status = admin.call("/admin/rollout/status", {"model": model})
        return (status.get("latest_decision") or {}).get("reason", "")

    try:
        wait_for(lambda: "approval" in latest_reason(), 120, "the manual gate to hold")
        assert store.load(model).label == "running:0"  # type: ignore[union-attr]

        stack.kill("control")
        stack.kill("serving")
        stack.start("serving")
        stack.start("control")
        health = httpx.get(f"{url}/healthz").json()
        assert health["rollout_id"] == started["rollout_id"]
        assert health["traffic_fraction"] == 0.3 and health["challenger_version"] == "2"
        assert store.load(model).label == "running:0"  # type: ignore[union-attr]

        admin.call("/admin/rollout/act", {"model": model, "action": "approve",
                                          "reason": "dashboards look fine"})  # fmt: skip
        wait_for(lambda: store.load(model).state.value == "promoted", 180, "the promotion")  # type: ignore[union-attr]
    finally:
        stop.set()
        traffic.join(timeout=30)

    stack.kill("serving")
    stack.start("serving")
    health = httpx.get(f"{url}/healthz").json()
    assert health["champion_version"] == "2" and health["challenger_version"] is None
