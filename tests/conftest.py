"""Shared fixtures: a real Tansu broker and a real MLflow server on free localhost ports.

Both are session-scoped (started at most once, on first use) and stopped, with
their whole process trees, at the end of the session. Tests that use them start
real processes: mark them ``@pytest.mark.integration``.

``free_port`` is importable: ``from tests.conftest import free_port``.
"""

from __future__ import annotations

import os

# Before anything imports mlflow or bentoml; children inherit these too.
for _name, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "BENTOML_DO_NOT_TRACK": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}.items():
    os.environ.setdefault(_name, _value)

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from modelcanary.config import Settings  # noqa: E402
from modelcanary.infra.broker import start_broker  # noqa: E402
from modelcanary.infra.mlflow_server import mlflow_url, start_mlflow_server  # noqa: E402
from modelcanary.infra.processes import LOCALHOST, free_port, stop_process  # noqa: E402

__all__ = ["free_port"]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a memory-only Tansu broker for the whole session.

    Its log is ``<pytest tmp>/broker0/broker.log``. Topics are not created: use
    :func:`modelcanary.infra.topics.ensure_topics` with names unique to the test.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    handle = start_broker(port, log, cwd=log.parent)
    try:
        yield f"{LOCALHOST}:{port}"
    finally:
        stop_process(handle, timeout_s=2.0)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"http://127.0.0.1:PORT"`` of an ``mlflow server`` (SQLite store) for the whole session.

    Takes 4-6 s to start. The store and ``logs/mlflow.log`` are under
    ``<pytest tmp>/mlflow0/``. Use model names unique to the test.
    """
    port = free_port()
    store = tmp_path_factory.mktemp("mlflow")
    handle = start_mlflow_server(port, store, store / "logs" / "mlflow.log")
    try:
        yield mlflow_url(port)
    finally:
        stop_process(handle, timeout_s=10.0)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Build :class:`Settings` with ``data_dir`` in the test's tmp dir, plus any overrides.

    Example: ``settings = settings_factory(kafka_bootstrap=kafka_bootstrap, partitions=2)``.
    """

    def make(**overrides: object) -> Settings:
        return Settings(data_dir=tmp_path / "data").with_overrides(**overrides)

    return make
