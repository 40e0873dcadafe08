"""The SLO burn-rate gate with real processes: a candidate that fails on 40% of its calls,
under a policy whose only objective is availability, is halted by the judge with the
burn-rate reason, and the halt is in the rollout state and the audit trail."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from modelcanary.audit import AuditLog
from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.infra.topics import ensure_topics
from modelcanary.launch import Component, start_worker
from modelcanary.policy import policy_from_dict
from modelcanary.registry import Registry
from modelcanary.rollout import RolloutState
from modelcanary.simulate import TrafficConfig, TrafficSimulator
from tests.conftest import free_port
from tests.integration.faulty_models import register_pyfunc
from tests.integration.flaky_model import FlakyModel
from tests.integration.serving_stack import clean_mlflow_env, start_clean_serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = {
    # No gates and a step that cannot complete: only the SLO gate can end this rollout.
    "steps": [{"traffic_fraction": 0.5, "min_samples": 1_000_000, "max_duration_s": 600}],
    "slos": {
        "availability": {"objective": 0.99},
        "burn_rate": {
            "windows": [{"long_s": 60, "short_s": 10, "max_multiple": 3}],
            "min_calls": 30,
        },
    },
}


@pytest.fixture
def stack(kafka_bootstrap: str, mlflow_uri: str, tmp_path) -> Iterator[tuple[Settings, str, str]]:
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, mlflow_uri=mlflow_uri,
        model_name=f"slo-{uuid.uuid4().hex[:6]}", topics=Topics(f"s{uuid.uuid4().hex[:6]}"),
        partitions=2, reconcile_interval_s=0.5, session_timeout_ms=1_000,
        heartbeat_interval_ms=300, max_poll_interval_ms=2_000, snapshot_interval_s=0.5,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    X = dataset.X_train.head(3)
    registry.register_sklearn(settings.model_name, train_variant("baseline", dataset), X)
    flaky = register_pyfunc(registry, settings.model_name, FlakyModel(fail_share=0.4), X)
    components: list[Component] = []
    try:
        serving = start_clean_serving(settings, free_port())
        components.append(serving)
        with clean_mlflow_env():
            components += [start_worker(settings, name) for name in ("evaluate", "control")]
        yield settings, flaky, serving.url or ""
    finally:
        for component in components:
            component.stop()


def test_a_flaky_challenger_is_halted_for_burning_its_error_budget(
    stack: tuple[Settings, str, str],
) -> None:
    settings, flaky, url = stack
    model = settings.model_name
    registry = Registry(settings.resolved_mlflow_uri())
    controller = Controller(registry)
    started = controller.start(model, flaky, policy_from_dict(POLICY))

    dataset = load_demo_dataset()
    rows = dataset.X_test.to_dict(orient="records")
    labels = [int(y) for y in dataset.y_test]
    stop = threading.Event()
    simulator = TrafficSimulator(url, rows, labels, TrafficConfig(rate_per_s=60, seed=5))
    traffic = threading.Thread(
        target=lambda: asyncio.run(simulator.run(stop.is_set, 300)), daemon=True
    )
    traffic.start()
    try:
        deadline = time.monotonic() + 120
        while (rollout := controller.store.load(model)) is not None and (
            rollout.state is RolloutState.RUNNING
        ):
            assert time.monotonic() < deadline, "timed out waiting for the halt"
            time.sleep(0.5)
    finally:
        stop.set()
        traffic.join(timeout=30)

    assert rollout is not None and rollout.rollout_id == started.rollout_id
    assert rollout.state is RolloutState.HALTED, rollout.reason
    assert rollout.reason.startswith("Halt: error budget burning: challenger availability")
    assert "above the 3x limit of objective 99%" in rollout.reason

    audit = AuditLog(registry)
    halts = [e for e in audit.history(model) if e.action == "halt"]
    assert [(h.reason, h.applied) for h in halts] == [(rollout.reason, True)]
    decision = audit.decision(halts[0].run_id)
    slos = decision["evidence"]["slos"]
    window = slos["objectives"][0]["windows"][0]
    assert slos["burning"] and window["verdict"] == "burning"
    long = window["challenger"]["long"]
    assert long["calls"] >= 30 and 0.2 < long["bad"] / long["calls"] < 0.6
    assert window["burn_rate_lower"] > 3
    assert window["champion"]["long"]["burn_rate"] < 3  # the champion is healthy
