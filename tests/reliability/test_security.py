"""Security rules, one test each, against the shared stack (real processes).

1. Admin endpoints and `modelcanary rollout` actions need the bearer token.
2. Tokens and credentials never appear in logs, events or reports.
3. Models load only from the registry: nothing from a request is unpickled or imported.
4. Request bodies and headers are size-limited.

This module runs last in the suite on purpose: the secrets test greps everything the
stack wrote during the whole suite (fuzzing, load, admin calls).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelcanary.audit import EXPERIMENT
from modelcanary.events import decode_decision
from modelcanary.launch import REPO_ROOT
from modelcanary.snapshot import MAGIC
from tests.reliability.conftest import EVIL_MODULE, STACK_MAX_REQUEST_BYTES, Stack
from tests.reliability.stack import read_topic, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]


def _decisions(stack: Stack, marker: str) -> list:
    records = read_topic(stack.settings.resolved_kafka_bootstrap(), stack.settings.topics.decisions)
    return [d for d in (decode_decision(r.value) for r in records) if marker in d.reason]


def _admin_paths(stack: Stack) -> list[str]:
    spec = stack.client.get("/docs.json").json()
    return sorted(p for p in spec["paths"] if p.startswith("/admin/"))


def _state(stack: Stack) -> str:
    rollout = stack.controller.store.load(stack.model)
    return rollout.state.value if rollout else "none"


# -- 1. admin needs the token ---------------------------------------------------------
def test_admin_endpoints_refuse_calls_without_the_right_token(stack: Stack) -> None:
    stack.ensure_running_rollout()
    paths = _admin_paths(stack)
    assert {"/admin/rollout/act", "/admin/rollout/start", "/admin/rollout/status"} <= set(paths)
    token = stack.secrets.admin_token
    marker = f"unauthorised-{uuid.uuid4().hex[:8]}"
    body = {"model": stack.model, "action": "pause", "reason": marker, "version": "1"}
    refused = {
        "no header": {},
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "empty bearer": {"Authorization": "Bearer"},
        "token with another scheme": {"Authorization": f"Basic {token}"},
        "token without scheme": {"Authorization": token},
        "token prefix": {"Authorization": f"Bearer {token[:-1]}"},
        "token as a cookie": {"Cookie": f"token={token}"},
        "token in another header": {"X-Admin-Token": token},
    }
    for path in paths:
        for what, headers in refused.items():
            response = stack.client.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, what, response.status_code, response.text)
        in_query = stack.client.post(f"{path}?token={token}", json=body)
        assert in_query.status_code == 401, (path, "token in the query string")
    allowed = stack.client.post(
        "/admin/rollout/status", json={"model": stack.model}, headers=stack.admin_headers()
    )
    assert allowed.status_code == 200, allowed.text
    assert _decisions(stack, marker) == [], "a refused call published a decision"
    assert _state(stack) == "running"


def _cli(stack: Stack, *args: str, token: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MODELCANARY_ADMIN_TOKEN"}
    env["MODELCANARY_SERVING_URL"] = stack.url
    if token is not None:
        env["MODELCANARY_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "modelcanary", "rollout", *args],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_rollout_actions_need_the_token(stack: Stack) -> None:
    stack.ensure_running_rollout()
    marker = f"cli-{uuid.uuid4().hex[:8]}"
    without = _cli(stack, "pause", stack.model, "-r", marker, token=None)
    wrong = _cli(stack, "pause", stack.model, "-r", marker, token="not-the-token")
    for result in (without, wrong):
        assert result.returncode != 0, result.stdout
        assert "token" in (result.stdout + result.stderr).lower()
    assert _decisions(stack, marker) == [] and _state(stack) == "running"

    right = _cli(stack, "pause", stack.model, "-r", marker, token=stack.secrets.admin_token)
    assert right.returncode == 0, right.stdout + right.stderr
    assert [d.action.value for d in _decisions(stack, marker)] == ["pause"]
    wait_until(lambda: _state(stack) == "paused", 20, "the controller to pause")
    resumed = _cli(stack, "resume", stack.model, "-r", marker, token=stack.secrets.admin_token)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    wait_until(lambda: _state(stack) == "running", 20, "the controller to resume")


# -- 2. secrets never written ----------------------------------------------------------
def _corpus(stack: Stack, tmp_path: Path) -> dict[str, bytes]:
    """Everything the stack wrote or answers, by where it comes from."""
    corpus: dict[str, bytes] = {}
    for log in stack.logs():
        corpus[f"log {log.name}"] = log.read_bytes()
    bootstrap = stack.settings.resolved_kafka_bootstrap()
    for topic in stack.settings.topics.all():
        chunks = []
        for r in read_topic(bootstrap, topic):
            value = r.value or b""
            if value.startswith(MAGIC):  # a partition snapshot: zlib(pickle) after the signature
                value = zlib.decompress(value[len(MAGIC) + 32 :])
            chunks += [r.key or b"", value]
        corpus[f"topic {topic}"] = b"\n".join(chunks)
    client = stack.registry.client
    # The model's runs: its versions' training runs and every decision's audit run.
    runs = [client.get_run(v.run_id) for v in stack.registry.list_versions(stack.model) if v.run_id]
    audit = client.get_experiment_by_name(EXPERIMENT)
    if audit is not None:
        runs += client.search_runs(
            [audit.experiment_id], f"tags.`modelcanary.model` = '{stack.model}'", max_results=1000
        )
    for run in runs:
        data = run.data
        corpus[f"run {run.info.run_id} data"] = json.dumps(
            [data.params, data.tags, sorted(data.metrics)]
        ).encode()
        for artifact in client.list_artifacts(run.info.run_id):
            if artifact.is_dir or not artifact.path.endswith((".json", ".html", ".txt")):
                continue
            local = client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path))
            corpus[f"run {run.info.run_id} {artifact.path}"] = Path(local).read_bytes()
    assert any(key.endswith("decision.json") for key in corpus), "no audit run was read"
    model = client.get_registered_model(stack.model)
    corpus["registered model tags"] = json.dumps(model.tags).encode()
    for version in stack.versions:
        tags = stack.registry.version_tags(stack.model, version)
        corpus[f"version {version} tags"] = json.dumps(tags).encode()
    for path in ("/healthz", "/metrics", "/docs.json"):
        corpus[f"GET {path}"] = stack.client.get(path).content
    status = stack.client.post(
        "/admin/rollout/status", json={"model": stack.model}, headers=stack.admin_headers()
    )
    corpus["admin status"] = status.content
    for index, (_, body) in enumerate(stack.webhook.posts):
        corpus[f"webhook body {index}"] = body
    return corpus


def test_secrets_never_appear_in_logs_events_or_reports(stack: Stack, tmp_path: Path) -> None:
    # Traffic, and a decision the controller applies and notifies.
    stack.ensure_running_rollout()
    for i in range(20):
        answer = stack.client.post("/predict", json={"features": stack.rows[i], "unit_id": f"s{i}"})
        assert answer.status_code == 200, answer.text
        stack.client.post("/feedback", json={"request_id": answer.json()["request_id"], "label": 1})
    marker = f"secrets-{uuid.uuid4().hex[:8]}"
    posts_before = len(stack.webhook.posts)
    paused = stack.client.post(
        "/admin/rollout/act",
        json={"model": stack.model, "action": "pause", "reason": marker},
        headers=stack.admin_headers(),
    )
    assert paused.status_code == 200, paused.text
    wait_until(lambda: len(stack.webhook.posts) > posts_before, 30, "the webhook")
    hooked = [path for path, _ in stack.webhook.posts]
    assert all(stack.secrets.webhook_path in p for p in hooked), "the webhook URL was not used"
    from modelcanary.report import load_rollout, resolve_rollout_id, write_report

    rollout = load_rollout(stack.registry, resolve_rollout_id(stack.registry, stack.model))
    report = write_report(rollout, tmp_path / "report.html")
    stack.ensure_running_rollout()
    time.sleep(1.0)  # last log lines and events

    corpus = _corpus(stack, tmp_path)
    corpus["report.html"] = report.read_bytes()
    assert any(k.startswith("log ") and v for k, v in corpus.items())
    assert len(corpus[f"topic {stack.settings.topics.predictions}"]) > 1000
    assert len(corpus[f"topic {stack.settings.topics.decisions}"]) > 100
    # Logs wrap long lines (rich): look for each secret with all whitespace taken out.
    leaks = {
        where: [
            name for name, secret in vars(stack.secrets).items()
            if secret.encode() in re.sub(rb"\s+", b"", text)
        ]
        for where, text in corpus.items()
    }  # fmt: skip
    leaks = {where: names for where, names in leaks.items() if names}
    assert not leaks, f"secrets found in: {leaks}"


# -- 3. models only from the registry --------------------------------------------------
class _Payload:
    """Unpickling this creates a folder: proof that a payload was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_models_load_only_from_the_registry(stack: Stack, tmp_path: Path) -> None:
    stack.ensure_running_rollout()
    before = stack.client.get("/healthz").json()
    unpickled = tmp_path / "UNPICKLED"
    imported = stack.evil_dir / "IMPORTED"
    raw = pickle.dumps(_Payload(unpickled))
    encoded = base64.b64encode(raw).decode()
    row = stack.row
    evil_uri = f"file://{tmp_path}/model"

    def raw_body(content_type: str) -> dict:
        return {"content": raw, "headers": {"content-type": content_type}}

    def json_body(**fields: object) -> dict:
        return {"json": fields}

    attempts: list[tuple[str, str, dict]] = [
        ("/predict", "pickle", raw_body("application/octet-stream")),
        ("/predict", "pickle sent as json", raw_body("application/json")),
        ("/predict", "python-pickle", raw_body("application/python-pickle")),
        ("/predict_batch", "pickle", raw_body("application/octet-stream")),
        ("/feedback", "pickle", raw_body("application/octet-stream")),
        ("/predict", "model_uri", json_body(features=row, model_uri=evil_uri)),
        ("/predict", "version", json_body(features=row, version="1")),
        ("/predict", "loader module", json_body(features=row, loader_module=EVIL_MODULE)),
        ("/predict", "model_uri feature", json_body(features={**row, "model_uri": evil_uri})),
        ("/predict", "pickled features", json_body(features=encoded)),
        ("/predict", "pickled values", json_body(features=dict.fromkeys(row, encoded))),
        ("/predict", "module as value", json_body(features=dict.fromkeys(row, EVIL_MODULE))),
        ("/predict_batch", "model_uri", json_body(rows=[{"features": row, "model_uri": evil_uri}])),
        ("/feedback", "model_uri", json_body(request_id="r", label=1, model_uri=evil_uri)),
        ("/admin/rollout/start", "uri as version", json_body(model=stack.model, version=evil_uri)),
        (
            "/admin/rollout/start",
            "policy with a loader",
            json_body(
                model=stack.model,
                version="1",
                policy={"loader_module": EVIL_MODULE, "python_model": encoded},
            ),
        ),
    ]
    answers = {}
    for path, what, request in attempts:
        headers = {**request.pop("headers", {}), **stack.admin_headers()}
        response = stack.client.post(path, headers=headers, **request)
        answers[f"{path} {what}"] = response.status_code
    # A label is data: a client may send any short string, and it is only ever stored.
    label = stack.client.post("/feedback", json={"request_id": "r", "label": encoded[:900]})
    assert label.status_code == 200
    assert all(400 <= status < 500 for status in answers.values()), answers
    assert not unpickled.exists(), "a request payload was unpickled"
    assert not imported.exists(), f"a request got {EVIL_MODULE} imported"
    after = stack.client.get("/healthz").json()
    for name in ("champion_version", "challenger_version", "rollout_id"):
        assert after[name] == before[name], name


# -- 4. request size limits ------------------------------------------------------------
def test_request_bodies_are_size_limited(stack: Stack) -> None:
    big = json.dumps({"features": stack.row, "pad": "x" * STACK_MAX_REQUEST_BYTES}).encode()
    posts = ["/predict", "/predict_batch", "/feedback", *_admin_paths(stack)]
    as_json = {"content-type": "application/json"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    for path in posts:
        declared = stack.client.post(path, content=big, headers=as_json)
        assert declared.status_code == 413, (path, declared.status_code)
        streamed = stack.client.post(path, content=chunks(), headers=as_json)
        assert streamed.status_code == 413, (path, streamed.status_code)
    deep = b'{"features": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert len(deep) < STACK_MAX_REQUEST_BYTES
    nested = stack.client.post("/predict", content=deep, headers=as_json)
    assert 400 <= nested.status_code < 500, nested.status_code
    assert stack.client.get("/healthz").status_code == 200


def test_oversized_request_headers_are_refused(stack: Stack) -> None:
    """Headers over MODELCANARY_MAX_HEADER_BYTES (16 kB) or MODELCANARY_MAX_HEADERS (100)
    get 431 naming the limit, on every path (serving/limits.py). uvicorn's httptools parser
    has no limit of its own: the header is received whole before it is refused."""
    body = {"features": stack.row}
    attempts = {
        "1 MB header, GET /healthz": ("GET", "/healthz", {"X-Pad": "x" * 1_000_000}),
        "20 kB header, POST /predict": ("POST", "/predict", {"X-Pad": "x" * 20_000}),
        "150 fields, POST /feedback": ("POST", "/feedback", {f"X-H{i}": "1" for i in range(150)}),
    }
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for what, (method, path, headers) in attempts.items():
            json_body = body if path == "/predict" else {"request_id": "r", "label": 1}
            response = client.request(method, path, headers=headers,
                                      json=None if method == "GET" else json_body)  # fmt: skip
            assert response.status_code == 431, (what, response.status_code)
            error = response.json()["error"]
            limit = "MAX_HEADERS)" if "fields" in what else "MAX_HEADER_BYTES"
            assert f"MODELCANARY_{limit}" in error, (what, error)
        near = client.post("/predict", json=body, headers={"X-Pad": "x" * 12_000})
        assert near.status_code == 200, near.text
    assert stack.client.get("/healthz").status_code == 200
