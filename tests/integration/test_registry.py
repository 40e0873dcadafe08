"""The MLflow registry adapter against real MLflow stores: SQLite files and a REST server."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import modelcanary
from modelcanary.demo_data import DemoDataset, load_demo_dataset, test_accuracy, train_variant
from modelcanary.errors import RegistryError, RegistryUnavailableError
from modelcanary.registry import CHALLENGER, CHAMPION, Registry

pytestmark = pytest.mark.integration

MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


@pytest.fixture(scope="module", autouse=True)
def _quiet_mlflow() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in MLFLOW_ENV.items():
            patch.setenv(key, value)
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unique(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def data() -> DemoDataset:
    return load_demo_dataset()


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating the schema costs ~1 s); tests use unique names."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def registry(sqlite_uri: str) -> Registry:
    return Registry(sqlite_uri)


def test_first_version_becomes_champion_and_second_can_be_challenger(
    registry: Registry, data: DemoDataset, sqlite_uri: str
) -> None:
    name = _unique()
    first = registry.register_sklearn(name, train_variant("baseline", data), data.X_train)
    assert first == "1"
    assert registry.alias_version(name, CHAMPION) == "1"

    second = modelcanary.register(
        train_variant("good", data), name, data.X_train, tracking_uri=sqlite_uri, challenger=True
    )
    assert second == "2"
    assert registry.aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}
    versions = registry.list_versions(name)
    assert [(v.version, v.aliases) for v in versions] == [("1", (CHAMPION,)), ("2", (CHALLENGER,))]
    assert all(v.run_id for v in versions)
    assert versions[0].created_at <= versions[1].created_at


def test_challenger_flag_on_a_first_version_leaves_it_champion_only(
    registry: Registry, data: DemoDataset, sqlite_uri: str
) -> None:
    name = _unique()
    version = modelcanary.register(
        train_variant("bad", data), name, data.X_train, tracking_uri=sqlite_uri, challenger=True
    )
    assert registry.aliases(name) == {CHAMPION: version}


def test_register_logs_metrics_description_tags_and_artifacts_beside_the_db(
    registry: Registry, data: DemoDataset, sqlite_uri: str
) -> None:
    from mlflow import MlflowClient

    name = _unique()
    version = registry.register_sklearn(
        name,
        train_variant("baseline", data),
        data.X_train,
        description="the baseline",
        version_tags={"modelcanary.variant": "baseline"},
        metrics={"test_accuracy": 0.959},
    )
    info = registry.list_versions(name)[0]
    assert (info.version, info.description) == (version, "the baseline")
    assert info.tags == {"modelcanary.variant": "baseline"}
    run = MlflowClient(sqlite_uri).get_run(info.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(0.959)
    artifacts = Path(sqlite_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    assert any(artifacts.rglob("MLmodel")), "artifacts should sit beside the SQLite file"


def test_aliases_move_and_deleting_an_absent_alias_is_quiet(
    registry: Registry, data: DemoDataset
) -> None:
    name = _unique()
    model = train_variant("baseline", data)
    for _ in range(2):
        registry.register_sklearn(name, model, data.X_train)
    registry.set_alias(name, CHALLENGER, "2")
    registry.set_alias(name, CHAMPION, "2")
    assert registry.alias_version(name, CHAMPION) == "2"
    registry.delete_alias(name, CHALLENGER)
    registry.delete_alias(name, CHALLENGER)
    assert registry.alias_version(name, CHALLENGER) is None
    assert registry.aliases(name) == {CHAMPION: "2"}
    with pytest.raises(RegistryError, match=name):
        registry.set_alias(name, CHAMPION, "7")


def test_model_and_version_tags_round_trip(registry: Registry, data: DemoDataset) -> None:
    name = _unique()
    version = registry.register_sklearn(name, train_variant("baseline", data), data.X_train)
    rollout = json.dumps({"state": "running", "fraction": 0.05})
    registry.set_model_tags(name, {"modelcanary.rollout": rollout, "team": "risk"})
    assert registry.model_tags(name) == {"modelcanary.rollout": rollout, "team": "risk"}
    untagged = _unique()
    registry.register_sklearn(untagged, train_variant("baseline", data), data.X_train)
    tagged = registry.models_tagged("modelcanary.rollout")
    assert tagged[name] == rollout and untagged not in tagged
    registry.delete_model_tags(name, ["team", "never-set"])
    assert registry.model_tags(name) == {"modelcanary.rollout": rollout}

    registry.set_version_tags(name, version, {"modelcanary.status": "retired"})
    assert registry.version_tags(name, version) == {"modelcanary.status": "retired"}
    assert registry.list_versions(name)[0].tags == {"modelcanary.status": "retired"}


def test_load_predictor_answers_like_the_trained_model(
    registry: Registry, data: DemoDataset
) -> None:
    name = _unique()
    model = train_variant("baseline", data)
    version = registry.register_sklearn(name, model, data.X_train)

    predictor = registry.load_predictor(name, version)
    assert predictor.version == version
    assert predictor.feature_names == data.feature_names
    rows = data.X_test.to_dict(orient="records")
    answers = predictor.predict(rows)
    assert len(answers) == len(rows)
    json.dumps(answers)  # JSON-native: no numpy scalars
    predictions = [p for p, _ in answers]
    scores = [s for _, s in answers]
    assert all(type(p) is int for p in predictions)
    assert all(type(s) is float and 0.0 <= s <= 1.0 for s in scores)
    assert predictions == model.predict(data.X_test).tolist()
    assert scores == pytest.approx(model.predict_proba(data.X_test)[:, 1].tolist())
    accuracy = sum(p == y for p, y in zip(predictions, data.y_test, strict=True)) / len(rows)
    assert accuracy == pytest.approx(test_accuracy(model, data))
    # one row alone: the same class, the same score up to rounding (numpy's SIMD loops can
    # sum a batch of one in another order: 1.9542590656676967e-06 against ...6677e-06)
    alone = predictor.predict([rows[0]])[0]
    assert alone[0] == answers[0][0]
    assert alone[1] == pytest.approx(answers[0][1], rel=1e-12)


def test_load_predictor_of_a_forest_needs_no_manual_skops_trust(
    registry: Registry, data: DemoDataset
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    name = _unique()
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(data.X_train, data.y_train)
    version = registry.register_sklearn(name, forest, data.X_train)
    (prediction, score), *_ = registry.load_predictor(name, version).predict(
        data.X_test.head(3).to_dict(orient="records")
    )
    assert prediction in (0, 1) and 0.0 <= score <= 1.0


def test_unknown_model_or_version_raises_registry_error_naming_it(
    registry: Registry, data: DemoDataset
) -> None:
    missing = _unique("missing")
    assert not registry.exists(missing)
    for call in (
        lambda: registry.alias_version(missing, CHAMPION),
        lambda: registry.model_tags(missing),
        lambda: registry.list_versions(missing),
        lambda: registry.load_predictor(missing, "1"),
    ):
        with pytest.raises(RegistryError, match=missing) as caught:
            call()
        assert not isinstance(caught.value, RegistryUnavailableError)

    name = _unique()
    registry.register_sklearn(name, train_variant("baseline", data), data.X_train)
    assert registry.exists(name) and name in registry.list_models()
    with pytest.raises(RegistryError, match=r"version 9 of"):
        registry.version_tags(name, "9")
    with pytest.raises(RegistryError, match=r"version 9 of"):
        registry.load_predictor(name, "9")


def test_register_model_uri_registers_a_logged_run(
    registry: Registry, data: DemoDataset, sqlite_uri: str
) -> None:
    source = _unique("source")
    registry.register_sklearn(source, train_variant("baseline", data), data.X_train)
    run_id = registry.list_versions(source)[0].run_id

    name = _unique()
    assert registry.register_model_uri(name, f"runs:/{run_id}/model") == "1"
    assert registry.register_model_uri(name, f"models:/{source}/1", description="copy") == "2"
    assert registry.aliases(name) == {CHAMPION: "1"}
    assert registry.load_predictor(name, "2").predict(data.X_test.head(1).to_dict("records"))


def test_cli_register_and_models(registry: Registry, data: DemoDataset, sqlite_uri: str) -> None:
    from modelcanary.cli import commands  # noqa: F401  (attaches the commands)
    from modelcanary.cli.app import app

    source = _unique("source")
    registry.register_sklearn(source, train_variant("baseline", data), data.X_train)
    run_id = registry.list_versions(source)[0].run_id
    name = _unique()
    runner = CliRunner()
    for extra in ([], ["--challenger"]):
        result = runner.invoke(
            app,
            [
                "register",
                name,
                "--model-uri",
                f"runs:/{run_id}/model",
                "--tracking-uri",
                sqlite_uri,
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
    assert "version 2 (challenger)" in result.output
    result = runner.invoke(app, ["models", name, "--json", "--tracking-uri", sqlite_uri])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert [v["aliases"] for v in listing[0]["versions"]] == [[CHAMPION], [CHALLENGER]]
    result = runner.invoke(app, ["models", "--tracking-uri", sqlite_uri])
    assert result.exit_code == 0 and name in result.output


def test_a_closed_port_fails_fast_with_the_fix(data: DemoDataset) -> None:
    registry = Registry(f"http://127.0.0.1:{_free_port()}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match="modelcanary up"):
        registry.alias_version("demo-classifier", CHAMPION)
    with pytest.raises(RegistryUnavailableError):
        registry.register_sklearn("demo-classifier", train_variant("bad", data), data.X_train)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("read", ["aliases", "aliases_and_tags"])  # the client; the poll's GET
def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        registry = Registry(f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError, match="not reachable"):
            getattr(registry, read)("demo-classifier")
        assert time.monotonic() - started < 4


def test_the_poll_fails_fast_with_the_fix_too() -> None:
    registry = Registry(f"http://127.0.0.1:{_free_port()}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match=r"modelcanary up.*connection refused"):
        registry.aliases_and_tags("demo-classifier")
    assert time.monotonic() - started < 2


class _ClosesAfterEachAnswer(http.server.BaseHTTPRequestHandler):
    """Answers like MLflow over HTTP/1.1, then drops the connection without saying so."""

    protocol_version = "HTTP/1.1"
    requests_seen: list[str] = []

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        body = json.dumps(
            {
                "registered_model": {
                    "name": "m",
                    "aliases": [{"alias": CHAMPION, "version": "3"}],
                    "tags": [{"key": "modelcanary.rollout", "value": "{}"}, {"key": "empty"}],
                }
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *_args: object) -> None:
        pass


def test_the_poll_reconnects_once_when_the_server_dropped_the_kept_alive_connection() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosesAfterEachAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        registry = Registry(f"http://127.0.0.1:{server.server_address[1]}/prefix")
        expected = ({CHAMPION: "3"}, {"modelcanary.rollout": "{}", "empty": ""})
        for _ in range(3):
            assert registry.aliases_and_tags("m") == expected
        assert len(_ClosesAfterEachAnswer.requests_seen) >= 3
        assert all(
            path == "/prefix/api/2.0/mlflow/registered-models/get?name=m"
            for path in _ClosesAfterEachAnswer.requests_seen
        )
    finally:
        server.shutdown()
        server.server_close()


# -- through a real `mlflow server` -------------------------------------------------------


@contextlib.contextmanager
def _mlflow_server(root: Path) -> Iterator[str]:
    port = _free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
            "--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root", str(root / "artifacts"), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **MLFLOW_ENV},
        start_new_session=True,
    )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.2)
        else:
            pytest.fail("mlflow server did not start within 60 s")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def rest_uri(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's shared server (``mlflow_uri`` in conftest) if there is one, else our own."""
    try:
        yield request.getfixturevalue("mlflow_uri")
        return
    except pytest.FixtureLookupError:
        pass
    root = tmp_path_factory.mktemp("mlflow-server")
    try:
        with _mlflow_server(root) as uri:
            yield uri
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_rest_server_round_trip_normalises_alias_versions(rest_uri: str, data: DemoDataset) -> None:
    registry = Registry(rest_uri)
    name = _unique()
    model = train_variant("baseline", data)
    assert registry.register_sklearn(name, model, data.X_train) == "1"
    assert (
        modelcanary.register(
            train_variant("bad", data), name, data.X_train, tracking_uri=rest_uri, challenger=True
        )
        == "2"
    )
    aliases = registry.aliases(name)
    assert aliases == {CHAMPION: "1", CHALLENGER: "2"}
    assert all(type(v) is str for v in aliases.values())
    assert registry.alias_version(name, CHALLENGER) == "2"
    assert [v.version for v in registry.list_versions(name)] == ["1", "2"]
    registry.set_model_tags(name, {"modelcanary.rollout": "{}"})
    assert registry.model_tags(name) == {"modelcanary.rollout": "{}"}
    assert registry.models_tagged("modelcanary.rollout")[name] == "{}"
    (prediction, score), *_ = registry.load_predictor(name, "1").predict(
        data.X_test.head(2).to_dict(orient="records")
    )
    assert prediction in (0, 1) and 0.0 <= score <= 1.0
    with pytest.raises(RegistryError, match="missing-model") as caught:
        registry.alias_version("missing-model", CHAMPION)
    assert not isinstance(caught.value, RegistryUnavailableError)


@pytest.mark.slow
def test_the_poll_over_plain_http_reads_what_the_client_reads(
    rest_uri: str, data: DemoDataset
) -> None:
    from mlflow import MlflowClient

    from modelcanary.registry_rest import RestModelReader

    assert RestModelReader.for_uri(rest_uri, 5.0) is not None  # the fast path is the one tested
    registry = Registry(rest_uri)
    name = _unique()
    registry.register_sklearn(name, train_variant("baseline", data), data.X_train)
    registry.register_sklearn(name, train_variant("good", data), data.X_train)
    registry.set_alias(name, CHALLENGER, "2")
    registry.set_model_tags(name, {"modelcanary.rollout": '{"step": 1}', "note": ""})
    model = MlflowClient(rest_uri).get_registered_model(name)
    expected = ({a: str(v) for a, v in model.aliases.items()}, dict(model.tags))
    assert expected == (
        {CHAMPION: "1", CHALLENGER: "2"},
        {"modelcanary.rollout": '{"step": 1}', "note": ""},
    )
    assert registry.aliases_and_tags(name) == expected
    assert registry.aliases_and_tags(name) == expected  # on the kept-alive connection
    with pytest.raises(RegistryError, match="does not exist") as caught:
        registry.aliases_and_tags("missing-model")
    assert not isinstance(caught.value, RegistryUnavailableError)
