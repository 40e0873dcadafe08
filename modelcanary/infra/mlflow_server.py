"""The embedded MLflow tracking server: ``mlflow server`` over a SQLite store and a local folder.

The server is ``python -m mlflow server`` run by this interpreter, so it uses the
MLflow installed next to modelcanary. It takes 4-6 s to answer on ``/health``
(longer the first time, when it creates the database schema).
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelcanary.infra.child_env import child_env
from modelcanary.infra.processes import (
    LOCALHOST,
    ProcessHandle,
    ensure_port_free,
    http_ok,
    start_detached,
    stop_process,
    wait_until_ready,
)

MLFLOW_READY_TIMEOUT_S = 90.0
MLFLOW_STOP_TIMEOUT_S = 10.0
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


def mlflow_url(port: int, host: str = LOCALHOST) -> str:
    return f"http://{host}:{port}"


def mlflow_command(port: int, store_dir: Path, host: str = LOCALHOST) -> list[str]:
    """Command line of ``mlflow server`` keeping its database and artifacts in ``store_dir``."""
    store_dir = store_dir.absolute()
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{store_dir / DB_FILE}",
        "--default-artifact-root",
        str(store_dir / ARTIFACTS_DIR),
        "--workers",
        "1",
    ]


def start_mlflow_server(
    port: int,
    store_dir: Path,
    log_path: Path,
    *,
    host: str = LOCALHOST,
    timeout_s: float = MLFLOW_READY_TIMEOUT_S,
    port_fix: str = "stop it or choose another port",
) -> ProcessHandle:
    """Start ``mlflow server`` on ``host:port`` and return once ``/health`` answers.

    Raises :class:`~modelcanary.errors.PortInUseError` (saying ``port_fix``) if the
    port is taken, :class:`~modelcanary.errors.InfraError` if the server does not
    come up (the server is then stopped).
    """
    ensure_port_free(port, host=host, fix=port_fix)
    store_dir.mkdir(parents=True, exist_ok=True)
    (store_dir / ARTIFACTS_DIR).mkdir(exist_ok=True)
    handle = start_detached(
        mlflow_command(port, store_dir, host), log_path=log_path, env=child_env(), cwd=store_dir
    )
    try:
        wait_until_ready(
            lambda: http_ok(f"{mlflow_url(port, host)}/health"),
            what=f"the MLflow server on {host}:{port}",
            process=handle,
            log_path=log_path,
            timeout_s=timeout_s,
        )
    except BaseException:  # includes Ctrl-C: never leave an unrecorded child behind
        stop_process(handle, timeout_s=MLFLOW_STOP_TIMEOUT_S)
        raise
    return handle
