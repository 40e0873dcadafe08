"""A real `bentoml serve` process in front of a real MLflow server and a real broker."""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.demo_data import DemoDataset, load_demo_dataset, train_variant
from modelcanary.events import Action, DecisionEvent, decode_outcome, decode_prediction
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import RecordConsumer
from modelcanary.launch import Component, start_serving
from modelcanary.policy import Policy, Step
from modelcanary.registry import Registry
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Stack:
    settings: Settings
    registry: Registry
    serving: Component
    client: httpx.Client
    dataset: DemoDataset
    versions: dict[str, str]

    def row(self, i: int = 0) -> dict[str, float]:
        return self.dataset.X_test.iloc[i].to_dict()

    def wait_for(self, condition, timeout_s: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            health = self.client.get("/healthz").json()
            if condition(health):
                return health
            assert time.monotonic() < deadline, f"timed out; last health: {health}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    model = f"serve-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("serving"),
        kafka_bootstrap=kafka_bootstrap,
        mlflow_uri=mlflow_uri,
        model_name=model,
        topics=Topics(prefix=f"t{uuid.uuid4().hex[:8]}"),
        partitions=3,
        reconcile_interval_s=0.3,
    )
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    versions = {
        variant: registry.register_sklearn(model, train_variant(variant, dataset),
                                           dataset.X_train.head(3))
        for variant in ("baseline", "good", "bad")
    }  # fmt: skip
    serving = start_serving(settings, free_port())
    try:
        with httpx.Client(base_url=serving.url or "", timeout=10) as client:
            yield Stack(settings, registry, serving, client, dataset, versions)
    finally:
        serving.stop()


def test_predict_answers_with_the_champion_version_and_request_id(stack: Stack) -> None:
    response = stack.client.post("/predict", json={"features": stack.row(), "request_id": "r-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == "r-1"
    assert body["version"] == stack.versions["baseline"]
    assert body["prediction"] in (0, 1) and 0.0 <= body["score"] <= 1.0


def test_bad_input_gets_a_400_that_names_the_field(stack: Stack) -> None:
    row = stack.row()
    row.pop("mean_radius")
    row["colour"] = 3.0
    response = stack.client.post("/predict", json={"features": row})
    assert response.status_code == 400
    assert "mean_radius" in response.text and "colour" in response.text
    assert stack.client.post("/predict", json={"feature": {}}).status_code == 400
    assert stack.client.post("/feedback", json={"request_id": "x"}).status_code == 400


def test_an_idle_connection_outlives_the_clients_own_idle_expiry(stack: Stack) -> None:
    """uvicorn's default (5 s) equals httpx's idle expiry: reusing a connection as the
    server closed it got a reset for a request the server never read (a flaky demo run)."""
    host, port = (stack.serving.url or "").removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() and connection.sock is not None
        first_socket = connection.sock
        time.sleep(6.0)  # beyond uvicorn's 5 s default, within MODELCANARY_HTTP_KEEPALIVE_S
        connection.request("GET", "/healthz")  # RemoteDisconnected if the server closed it
        assert connection.getresponse().status == 200
        assert connection.sock is first_socket
    finally:
        connection.close()


def test_healthz_reports_the_split(stack: Stack) -> None:
    health = stack.client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["champion_version"] == stack.versions["baseline"]


def test_every_model_call_and_feedback_reaches_kafka_on_the_same_partition(stack: Stack) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    stack.client.post("/predict", json={"features": stack.row(1), "request_id": request_id})
    stack.client.post(
        "/feedback", json={"request_id": request_id, "label": 1, "kpis": {"converted": 1.0}}
    )
    topics = stack.settings.topics
    consumer = RecordConsumer(
        stack.settings.resolved_kafka_bootstrap(), [topics.predictions, topics.outcomes]
    )
    found: dict[str, tuple[int, object]] = {}
    deadline = time.monotonic() + 15
    try:
        while len(found) < 2 and time.monotonic() < deadline:
            for record in consumer.poll(500):
                if record.topic == topics.predictions:
                    event = decode_prediction(record.value)
                else:
                    event = decode_outcome(record.value)
                if event.request_id == request_id:
                    found[record.topic] = (record.partition, event)
    finally:
        consumer.close()
    assert set(found) == {topics.predictions, topics.outcomes}
    assert found[topics.predictions][0] == found[topics.outcomes][0]
    prediction = found[topics.predictions][1]
    assert prediction.version == stack.versions["baseline"] and prediction.served  # type: ignore[attr-defined]
    assert found[topics.outcomes][1].kpis == {"converted": 1.0}  # type: ignore[attr-defined]


def _decision(controller: Controller, model: str, action: Action) -> DecisionEvent:
    rollout = controller.store.load(model)
    assert rollout is not None
    return DecisionEvent(
        model=model,
        rollout_id=rollout.rollout_id,
        action=action,
        from_state=rollout.label,
        to_state="",
        traffic_fraction=0.0,
        reason=f"test {action.value}",
    )


def test_canary_is_sticky_then_promotion_and_rollback_change_who_serves(stack: Stack) -> None:
    model = stack.settings.model_name
    controller = Controller(stack.registry)
    good, bad = stack.versions["good"], stack.versions["bad"]
    controller.start(model, good, Policy(steps=(Step(0.5),)))
    stack.wait_for(lambda h: h["challenger_version"] == good and h["traffic_fraction"] == 0.5)

    def version_for(unit: str) -> str:
        body = stack.client.post("/predict", json={"features": stack.row(2), "unit_id": unit})
        return body.json()["version"]

    first = {f"u{i}": version_for(f"u{i}") for i in range(300)}
    again = {unit: version_for(unit) for unit in first}
    assert first == again, "the same unit must keep its arm during a rollout"
    share = sum(v == good for v in first.values()) / len(first)
    assert 0.5 - 5 * (0.25 / 300) ** 0.5 < share < 0.5 + 5 * (0.25 / 300) ** 0.5

    assert controller.apply(_decision(controller, model, Action.PROMOTE)).applied
    stack.wait_for(lambda h: h["champion_version"] == good and h["challenger_version"] is None)
    assert {version_for(f"u{i}") for i in range(50)} == {good}

    controller.start(model, bad, Policy(steps=(Step(1.0),)))
    stack.wait_for(lambda h: h["challenger_version"] == bad)
    assert {version_for(f"u{i}") for i in range(20)} == {bad}
    assert controller.apply(_decision(controller, model, Action.ROLLBACK)).applied
    stack.wait_for(lambda h: h["challenger_version"] is None)
    assert {version_for(f"u{i}") for i in range(50)} == {good}
    assert stack.registry.version_tags(model, bad)["modelcanary.status"] == "rolled_back"
