"""The HTTP contract of a real `bentoml serve`: inputs checked against the MLflow signature,
4xx answers that name the field, an OpenAPI document that says the same, and no input
whatsoever that makes the service answer 5xx (schemathesis, from the document itself)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from modelcanary.config import Settings
from modelcanary.controller import Controller
from modelcanary.demo_data import DemoDataset, load_demo_dataset, train_variant
from modelcanary.launch import Component
from modelcanary.registry import Registry
from tests.conftest import free_port
from tests.integration.serving_stack import (
    end_rollout,
    serving_settings,
    start_clean_serving,
    start_rollout,
    wait_for_health,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_BYTES = 64 * 1024
MAX_ROWS = 20


@dataclass
class Contract:
    settings: Settings
    serving: Component
    client: httpx.Client
    dataset: DemoDataset

    @property
    def url(self) -> str:
        return self.serving.url or ""

    def row(self, i: int = 0) -> dict[str, float]:
        return self.dataset.X_test.iloc[i].to_dict()


@pytest.fixture(scope="module")
def contract(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Contract]:
    settings = serving_settings(
        tmp_path_factory.mktemp("contract"),
        kafka_bootstrap,
        mlflow_uri,
        max_request_bytes=MAX_BYTES,
        max_batch_rows=MAX_ROWS,
    )
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    model = settings.model_name
    sample = dataset.X_train.head(3)
    registry.register_sklearn(model, train_variant("baseline", dataset), sample)
    good = registry.register_sklearn(model, train_variant("good", dataset), sample)
    controller = Controller(registry)
    start_rollout(controller, model, good, 0.5)  # both arms answer
    serving = start_clean_serving(settings, free_port())
    try:
        with httpx.Client(base_url=serving.url or "", timeout=10) as client:
            wait_for_health(client, lambda h: h["challenger_version"] == good)
            yield Contract(settings, serving, client, dataset)
    finally:
        end_rollout(controller, model)
        serving.stop()


def _post(contract: Contract, path: str, raw: bytes | str) -> httpx.Response:
    return contract.client.post(path, content=raw, headers={"content-type": "application/json"})


def _with(row: dict, **changes: object) -> dict:
    out = dict(row)
    for key, value in changes.items():
        if value is ...:
            out.pop(key)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mean_radius": ...}, "missing feature(s) 'mean_radius'"),
        ({"colour": 1.0}, "unknown feature(s) 'colour'"),
        ({"mean_radius": "14.1"}, "features.mean_radius: expected a number, got a string"),
        ({"mean_radius": True}, "features.mean_radius: expected a number, got a boolean"),
        ({"mean_radius": None}, "features.mean_radius: is required"),
        ({"mean_radius": [1.0]}, "features.mean_radius: expected a number, got an array"),
    ],
    ids=["missing", "extra", "string", "boolean", "null", "array"],
)
def test_bad_features_get_a_400_naming_the_field(
    contract: Contract, change: dict, expected: str
) -> None:
    features = _with(contract.row(), **change)
    response = contract.client.post("/predict", json={"features": features})
    assert response.status_code == 400
    assert expected in response.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_get_a_400(contract: Contract, literal: str) -> None:
    body = json.dumps({"features": _with(contract.row(), mean_radius=123.456)})
    response = _post(contract, "/predict", body.replace("123.456", literal))
    assert response.status_code == 400
    assert "features.mean_radius" in response.text


def test_unknown_top_level_fields_and_long_ids_are_refused(contract: Contract) -> None:
    features = contract.row()
    typo = contract.client.post("/predict", json={"features": features, "unitid": "u1"})
    assert typo.status_code == 400 and "unitid" in typo.text
    long_id = contract.client.post("/predict", json={"features": features, "unit_id": "u" * 201})
    assert long_id.status_code == 400 and "unit_id" in long_id.text


def test_oversized_bodies_get_a_413_declared_or_streamed(contract: Contract) -> None:
    padding = "x" * (MAX_BYTES + 1)
    declared = _post(contract, "/predict", json.dumps({"features": {}, "pad": padding}))
    assert declared.status_code == 413 and "MODELCANARY_MAX_REQUEST_BYTES" in declared.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"features": {}, "pad": "'
        yield padding.encode()
        yield b'"}'

    streamed = contract.client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def test_batches_answer_every_row_and_refuse_oversized_or_bad_ones(contract: Contract) -> None:
    rows = [{"features": contract.row(i), "unit_id": f"unit-{i}"} for i in range(MAX_ROWS)]
    response = contract.client.post("/predict_batch", json={"rows": rows})
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert len(answers) == MAX_ROWS and {a["arm"] for a in answers} == {"champion", "challenger"}
    singles = [
        contract.client.post("/predict", json=row).json()["version"] for row in rows
    ]  # each row is routed by its own unit, as a single call would be
    assert [a["version"] for a in answers] == singles

    too_many = contract.client.post("/predict_batch", json={"rows": [*rows, rows[0]]})
    assert too_many.status_code == 400 and "rows" in too_many.text
    bad = [*rows[:3], {"features": _with(contract.row(), mean_area="big")}]
    named = contract.client.post("/predict_batch", json={"rows": bad})
    assert named.status_code == 400 and "rows[3].features.mean_area" in named.text
    twice = [{"features": contract.row(), "request_id": "same"}] * 2
    repeated = contract.client.post("/predict_batch", json={"rows": twice})
    assert repeated.status_code == 400 and "rows[1].request_id" in repeated.text


def test_feedback_refuses_non_finite_kpis(contract: Contract) -> None:
    response = _post(contract, "/feedback", '{"request_id": "r", "kpis": {"revenue": NaN}}')
    assert response.status_code == 400 and "revenue" in response.text
    ok = contract.client.post("/feedback", json={"request_id": "r", "kpis": {"revenue": 2.5}})
    assert ok.status_code == 200 and ok.json()["accepted"]


def test_the_openapi_document_describes_the_signature(contract: Contract) -> None:
    spec = contract.client.get("/docs.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    features = body["schema"]["properties"]["features"]
    columns = list(contract.dataset.X_train.columns)
    assert features["required"] == columns
    assert features["additionalProperties"] is False
    assert {name: p["type"] for name, p in features["properties"].items()} == dict.fromkeys(
        columns, "number"
    )
    batch = spec["paths"]["/predict_batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["properties"]["rows"]["maxItems"] == MAX_ROWS
    answer = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    score = answer["application/json"]["schema"]["properties"]["score"]
    assert score == {**score, "type": "number", "nullable": True}


@pytest.mark.parametrize("path", ["/predict", "/predict_batch", "/feedback"])
def test_no_request_built_from_the_openapi_document_gets_a_5xx(
    contract: Contract, path: str
) -> None:
    api = schemathesis.openapi.from_url(f"{contract.url}/docs.json")
    operation = api[path]["POST"]
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(base_url=contract.url, checks=[not_a_server_error])
        statuses.append(response.status_code)

    check()
    # The generated requests reached the models, not only the validation.
    assert 200 in statuses, statuses
