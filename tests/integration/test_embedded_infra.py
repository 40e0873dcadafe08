"""`modelcanary up/down/status` run as a user runs them, with the real broker and MLflow server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from modelcanary.config import load_settings
from modelcanary.errors import BrokerUnavailableError, InfraError
from modelcanary.infra import embedded
from modelcanary.infra.topics import ensure_topics
from tests.conftest import free_port

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "modelcanary")
PARTITIONS = 3  # not the broker's auto-create default (4), so explicit creation shows


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _ok(env: dict[str, str], *args: str) -> str:
    result = _cli(env, *args)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def _base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCANARY_")}
    env.update(
        {
            "MODELCANARY_DATA_DIR": str(data_dir),
            "MODELCANARY_BROKER_PORT": str(free_port()),
            "MODELCANARY_MLFLOW_PORT": str(free_port()),
            "MODELCANARY_PARTITIONS": str(PARTITIONS),
            "COLUMNS": "200",  # rich wraps at 80 columns when not on a terminal
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for the CLI with its own data dir and free ports; `down` afterwards."""
    env = _base_env(tmp_path / "data")
    yield env
    embedded.down(load_settings(env))


def _state(env: dict[str, str]) -> dict:
    return json.loads((Path(env["MODELCANARY_DATA_DIR"]) / "infra.json").read_text())


def _row(status_output: str, service: str) -> str:
    return next(line for line in status_output.splitlines() if f" {service} " in line)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.05)


def _round_trip(bootstrap: str, topic: str) -> None:
    """Produce one message and read it back (manual assignment: no group join)."""
    payload = uuid.uuid4().bytes
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        meta = producer.send(topic, key=b"k", value=payload).get(timeout=10)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        deadline = time.monotonic() + 10
        values: list[bytes] = []
        while payload not in values and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
        assert payload in values
    finally:
        consumer.close()


def _partitions(bootstrap: str, topics: tuple[str, ...]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}
    finally:
        admin.close()


@pytest.mark.slow
def test_up_status_stale_restart_down(cli_env: dict[str, str]) -> None:
    settings = load_settings(cli_env)
    topics = settings.topics.all()

    # up: both answer, topics exist with our partition count, state recorded
    _ok(cli_env, "up")
    state = _state(cli_env)
    bootstrap, mlflow = state["broker"]["address"], state["mlflow"]["address"]
    assert bootstrap == f"127.0.0.1:{settings.broker_port}"
    assert mlflow == f"http://127.0.0.1:{settings.mlflow_port}"
    assert settings.resolved_kafka_bootstrap() == bootstrap
    assert _partitions(bootstrap, topics) == dict.fromkeys(topics, PARTITIONS)
    _round_trip(bootstrap, settings.topics.predictions)
    assert httpx.get(f"{mlflow}/health").text == "OK"
    created = httpx.post(f"{mlflow}/api/2.0/mlflow/experiments/create", json={"name": "probe"})
    experiment = httpx.get(
        f"{mlflow}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": created.json()["experiment_id"]},
    ).json()["experiment"]
    assert experiment["artifact_location"].startswith(str(settings.data_dir / "artifacts"))
    assert (settings.data_dir / "mlflow.db").is_file()
    assert (settings.data_dir / "logs" / "broker.log").is_file()

    # up again: harmless, same processes
    out = _ok(cli_env, "up")
    assert "already running" in out
    assert _state(cli_env) == state

    out = _ok(cli_env, "status")
    assert "running" in _row(out, "broker") and "running" in _row(out, "mlflow")

    # the broker crashes: status sees it, up restarts only it (stale pid)
    os.kill(state["broker"]["pid"], signal.SIGKILL)
    _wait_gone(state["broker"]["pid"])
    out = _ok(cli_env, "status")
    assert "stopped" in _row(out, "broker") and "running" in _row(out, "mlflow")
    _ok(cli_env, "up")
    restarted = _state(cli_env)
    assert restarted["broker"]["pid"] != state["broker"]["pid"]
    assert restarted["mlflow"] == state["mlflow"]
    assert _partitions(bootstrap, topics) == dict.fromkeys(topics, PARTITIONS)
    _round_trip(bootstrap, settings.topics.outcomes)

    # down: no process left, state removed; down again is fine
    mlflow_tree = psutil.Process(restarted["mlflow"]["pid"]).children(recursive=True)
    pids = [restarted["broker"]["pid"], restarted["mlflow"]["pid"], *(p.pid for p in mlflow_tree)]
    assert len(pids) >= 3  # mlflow server runs uvicorn as a child
    _ok(cli_env, "down")
    for pid in pids:
        _wait_gone(pid, timeout_s=1.0)
    assert not (settings.data_dir / "infra.json").exists()
    out = _ok(cli_env, "status")
    assert "stopped" in _row(out, "broker") and "stopped" in _row(out, "mlflow")
    assert "nothing was running" in _ok(cli_env, "down")


@pytest.mark.parametrize("service", ["BROKER", "MLFLOW"])
def test_taken_port_is_one_clear_line(cli_env: dict[str, str], service: str) -> None:
    port = int(cli_env[f"MODELCANARY_{service}_PORT"])
    with socket.create_server(("127.0.0.1", port)):
        result = _cli(cli_env, "up")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert "Traceback" not in result.stderr + result.stdout
    assert len(message.splitlines()) == 1, message
    assert f"port {port} is taken" in message
    assert f"MODELCANARY_{service}_PORT" in message
    # nothing was started: ports are checked before anything starts
    assert not (Path(cli_env["MODELCANARY_DATA_DIR"]) / "infra.json").exists()


def test_external_services_are_used_not_started(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = f"ext-{uuid.uuid4().hex[:8]}"
    env = _base_env(
        tmp_path / "data",
        MODELCANARY_KAFKA_BOOTSTRAP=kafka_bootstrap,
        MODELCANARY_MLFLOW_URI="http://mlflow.example:5000",
        MODELCANARY_TOPIC_PREFIX=prefix,
    )
    out = _ok(env, "up")
    assert f"using the external one at {kafka_bootstrap}" in out
    assert "using the external one at http://mlflow.example:5000" in out
    assert not (tmp_path / "data" / "infra.json").exists()
    topics = load_settings(env).topics.all()
    assert _partitions(kafka_bootstrap, topics) == dict.fromkeys(topics, PARTITIONS)
    out = _ok(env, "status")
    assert "external" in _row(out, "broker") and kafka_bootstrap in _row(out, "broker")
    assert "external" in _row(out, "mlflow")
    _ok(env, "down")
    _round_trip(kafka_bootstrap, topics[0])  # down left the external broker alone


def test_ensure_topics_is_idempotent_and_refuses_other_partition_counts(
    kafka_bootstrap: str,
) -> None:
    names = (f"t-{uuid.uuid4().hex[:8]}.a", f"t-{uuid.uuid4().hex[:8]}.b")
    ensure_topics(kafka_bootstrap, names, 2)
    ensure_topics(kafka_bootstrap, names, 2)
    assert _partitions(kafka_bootstrap, names) == dict.fromkeys(names, 2)
    with pytest.raises(InfraError, match=r"has 2 partitions but 5 are configured.*PARTITIONS=2"):
        ensure_topics(kafka_bootstrap, names, 5)


def test_ensure_topics_on_unreachable_kafka_says_so() -> None:
    address = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=address):
        ensure_topics(address, ["x"], 1, timeout_s=1.0)
    assert time.monotonic() - t0 < 10


@pytest.mark.slow
def test_mlflow_uri_fixture_serves_the_rest_api(mlflow_uri: str) -> None:
    assert httpx.get(f"{mlflow_uri}/health").text == "OK"
    name = f"probe-{uuid.uuid4().hex[:8]}"
    created = httpx.post(f"{mlflow_uri}/api/2.0/mlflow/experiments/create", json={"name": name})
    assert created.status_code == 200, created.text
