"""A failing and a slow candidate behind a real `bentoml serve`: users always get the champion."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from modelcanary.config import Settings
from modelcanary.controller import Controller
from modelcanary.demo_data import DemoDataset, load_demo_dataset, train_variant
from modelcanary.events import Arm, Mode
from modelcanary.launch import Component
from modelcanary.registry import Registry
from tests.conftest import free_port
from tests.integration.faulty_models import RaisingModel, SlowModel, register_pyfunc
from tests.integration.serving_stack import (
    end_rollout,
    read_predictions,
    serving_settings,
    start_clean_serving,
    start_rollout,
    wait_for_health,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_MS = 200.0
# What a request may take beyond the challenger timeout on a busy 2-core machine.
SLACK_S = 0.35


@dataclass
class Stack:
    settings: Settings
    controller: Controller
    serving: Component
    client: httpx.Client
    dataset: DemoDataset
    versions: dict[str, str]

    @property
    def model(self) -> str:
        return self.settings.model_name

    def row(self, i: int = 0) -> dict[str, float]:
        return self.dataset.X_test.iloc[i].to_dict()

    def rollout(self, variant: str, fraction: float, mode: str = "canary") -> None:
        start_rollout(self.controller, self.model, self.versions[variant], fraction, mode)
        wanted = self.versions[variant]
        wait_for_health(self.client, lambda h: h["challenger_version"] == wanted)


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = serving_settings(
        tmp_path_factory.mktemp("failures"),
        kafka_bootstrap,
        mlflow_uri,
        challenger_timeout_ms=TIMEOUT_MS,
    )
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    X = dataset.X_train.head(3)
    model = settings.model_name
    versions = {"baseline": registry.register_sklearn(model, train_variant("baseline", dataset), X)}
    versions["raising"] = register_pyfunc(registry, model, RaisingModel(), X)
    versions["slow"] = register_pyfunc(registry, model, SlowModel(delay_s=1.0), X)
    serving = start_clean_serving(settings, free_port())
    try:
        with httpx.Client(base_url=serving.url or "", timeout=10) as client:
            yield Stack(settings, Controller(registry), serving, client, dataset, versions)
    finally:
        end_rollout(Controller(registry), model)
        serving.stop()


def _predict(stack: Stack, i: int, request_id: str) -> tuple[dict, float]:
    started = time.perf_counter()
    response = stack.client.post(
        "/predict", json={"features": stack.row(i % 50), "request_id": request_id}
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return response.json(), elapsed


def test_a_raising_canary_challenger_answers_nobody_and_records_its_errors(stack: Stack) -> None:
    stack.rollout("raising", 1.0)
    ids = [f"raise-{uuid.uuid4().hex}" for _ in range(20)]
    for i, request_id in enumerate(ids):
        body, _ = _predict(stack, i, request_id)
        assert (body["arm"], body["version"]) == ("champion", stack.versions["baseline"])
    events = read_predictions(
        stack.settings.kafka_bootstrap or "", stack.settings.topics.predictions, ids, 2
    )
    for request_id in ids:
        by_arm = {e.arm: e for e in events[request_id]}
        assert set(by_arm) == {Arm.CHAMPION, Arm.CHALLENGER}, events[request_id]
        failed = by_arm[Arm.CHALLENGER]
        assert failed.version == stack.versions["raising"] and not failed.served
        assert failed.error is not None and "deliberately broken" in failed.error
        assert by_arm[Arm.CHAMPION].served and by_arm[Arm.CHAMPION].error is None


def test_a_slow_challenger_costs_users_at_most_the_timeout(stack: Stack) -> None:
    stack.rollout("slow", 1.0)
    ids = [f"slow-{uuid.uuid4().hex}" for _ in range(16)]
    # Concurrent users: more than the challenger has threads, all stuck for a second.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda a: _predict(stack, *a), enumerate(ids)))
    for body, elapsed in results:
        assert (body["arm"], body["version"]) == ("champion", stack.versions["baseline"])
        assert elapsed < TIMEOUT_MS / 1000 + SLACK_S, f"took {elapsed:.3f} s"
    events = read_predictions(
        stack.settings.kafka_bootstrap or "", stack.settings.topics.predictions, ids, 2
    )
    errors = [
        e.error or "" for request_id in ids for e in events[request_id] if e.arm is Arm.CHALLENGER
    ]
    assert len(errors) == len(ids)
    assert all(e.startswith(("timeout", "challenger busy")) for e in errors), errors
    assert any(e.startswith("timeout") for e in errors)
    time.sleep(1.0)  # let the abandoned calls finish before the next test


def test_a_failing_shadow_never_reaches_the_user(stack: Stack) -> None:
    stack.rollout("raising", 1.0, mode="shadow")
    ids = [f"shadow-{uuid.uuid4().hex}" for _ in range(10)]
    for i, request_id in enumerate(ids):
        body, _ = _predict(stack, i, request_id)
        assert (body["arm"], body["version"]) == ("champion", stack.versions["baseline"])
    events = read_predictions(
        stack.settings.kafka_bootstrap or "", stack.settings.topics.predictions, ids, 2
    )
    for request_id in ids:
        shadow = [e for e in events[request_id] if e.arm is Arm.CHALLENGER]
        assert len(shadow) == 1 and shadow[0].mode is Mode.SHADOW and not shadow[0].served
        assert "deliberately broken" in (shadow[0].error or "")


def test_a_failing_challenger_in_a_batch_falls_back_row_by_row(stack: Stack) -> None:
    stack.rollout("raising", 0.5)
    rows = [{"features": stack.row(i), "unit_id": f"batch-user-{i}"} for i in range(40)]
    response = stack.client.post("/predict_batch", json={"rows": rows})
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert len(answers) == 40
    assert {(a["arm"], a["version"]) for a in answers} == {("champion", stack.versions["baseline"])}


def test_metrics_count_calls_and_errors_by_version_and_role(stack: Stack) -> None:
    stack.rollout("raising", 1.0)
    for i in range(3):
        _predict(stack, i, f"metrics-{uuid.uuid4().hex}")
    text = httpx.get(f"{stack.serving.url}/metrics", timeout=10).text
    model, raising = stack.model, stack.versions["raising"]
    champion = stack.versions["baseline"]
    assert (
        f'modelcanary_model_requests_total{{model="{model}",role="champion",'
        f'version="{champion}"}}' in text
    )
    assert (
        f'modelcanary_model_errors_total{{kind="exception",model="{model}",'
        f'role="challenger",version="{raising}"}}' in text
    )
    assert f'modelcanary_model_latency_seconds_bucket{{le="0.005",model="{model}"' in text
    assert f'modelcanary_spool_depth{{model="{model}"}} 0.0' in text
    assert f'modelcanary_events_produced_total{{model="{model}",topic=' in text
