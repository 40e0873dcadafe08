"""Up, down and status of the embedded Kafka broker and MLflow server, under ``settings.data_dir``.

Layout of the data directory::

    infra.json          the running services (see modelcanary.infra.state)
    .infra.lock         held while `up` or `down` runs, so concurrent calls queue
    logs/broker.log     stdout and stderr of the broker
    logs/mlflow.log     stdout and stderr of the MLflow server
    mlflow.db           MLflow's SQLite store
    artifacts/          MLflow's artifacts

A service configured as external (``MODELCANARY_KAFKA_BOOTSTRAP``,
``MODELCANARY_MLFLOW_URI``) is never started or stopped here.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from modelcanary.config import Settings
from modelcanary.errors import InfraError
from modelcanary.infra.broker import BROKER_STOP_TIMEOUT_S, start_broker
from modelcanary.infra.mlflow_server import MLFLOW_STOP_TIMEOUT_S, mlflow_url, start_mlflow_server
from modelcanary.infra.processes import (
    LOCALHOST,
    ProcessHandle,
    ensure_port_free,
    http_ok,
    stop_process,
    stop_processes,
    tcp_answers,
    wait_until_ready,
)
from modelcanary.infra.state import (
    EmbeddedState,
    ServiceName,
    ServiceRecord,
    load_state,
    save_state,
)
from modelcanary.infra.topics import ensure_topics

__all__ = ["EmbeddedState", "ServiceState", "ServiceStatus", "down", "status", "up"]

Progress = Callable[[str], None]
# How long an already running service may take to answer before it counts as hung.
RUNNING_ANSWER_TIMEOUT_S = 5.0
LOCK_FILE = ".infra.lock"


class ServiceState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    EXTERNAL = "external"


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `modelcanary status`."""

    name: ServiceName
    state: ServiceState
    address: str | None
    pid: int | None = None
    log: Path | None = None


@dataclass(frozen=True)
class _Service:
    """What up/down/status need to know about one embedded service."""

    name: ServiceName
    label: str
    port: int
    port_env: str
    external: str | None
    external_env: str
    address: str
    start: Callable[[Path], ProcessHandle]  # log path -> started, answering process
    answers: Callable[[str], bool]  # address -> whether it answers
    stop_timeout_s: float


def _broker_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return tcp_answers(int(port), host)


def _mlflow_answers(address: str) -> bool:
    return http_ok(f"{address}/health")


def _services(settings: Settings, data_dir: Path) -> tuple[_Service, ...]:
    broker_fix = "stop it or set MODELCANARY_BROKER_PORT"
    mlflow_fix = "stop it or set MODELCANARY_MLFLOW_PORT"
    return (
        _Service(
            name="broker",
            label="Kafka broker",
            port=settings.broker_port,
            port_env="MODELCANARY_BROKER_PORT",
            external=settings.kafka_bootstrap,
            external_env="MODELCANARY_KAFKA_BOOTSTRAP",
            address=f"{LOCALHOST}:{settings.broker_port}",
            start=lambda log: start_broker(
                settings.broker_port, log, cwd=data_dir, port_fix=broker_fix
            ),
            answers=_broker_answers,
            stop_timeout_s=BROKER_STOP_TIMEOUT_S,
        ),
        _Service(
            name="mlflow",
            label="MLflow server",
            port=settings.mlflow_port,
            port_env="MODELCANARY_MLFLOW_PORT",
            external=settings.mlflow_uri,
            external_env="MODELCANARY_MLFLOW_URI",
            address=mlflow_url(settings.mlflow_port),
            start=lambda log: start_mlflow_server(
                settings.mlflow_port, data_dir, log, port_fix=mlflow_fix
            ),
            answers=_mlflow_answers,
            stop_timeout_s=MLFLOW_STOP_TIMEOUT_S,
        ),
    )


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _quiet(_: str) -> None:
    pass


def up(settings: Settings, on_progress: Progress | None = None) -> EmbeddedState:
    """Start what is not running, wait until it answers, then create the topics.

    Idempotent: a service already running is kept (even if its port is no longer
    the configured one — `down` first to move it). A stale record (process gone,
    possibly leaving children behind) is cleaned up and the service restarted.
    All ports needed are checked before anything starts. The state file is
    rewritten after each service comes up, so a failure of the second leaves the
    first recorded (and stoppable by `down`).
    """
    say = on_progress or _quiet
    data_dir = settings.data_dir.absolute()
    path = data_dir / settings.infra_state_path.name
    with _locked(data_dir):
        state = load_state(path)
        to_start: list[_Service] = []
        for svc in _services(settings, data_dir):
            if svc.external:
                say(f"{svc.label}: using the external one at {svc.external} ({svc.external_env})")
                continue
            record = state.get(svc.name)
            if record is not None and record.process.is_running():
                _check_running(svc, record)
                moved = record.address != svc.address
                note = " (`modelcanary down` first to move it)" if moved else ""
                pid = record.process.pid
                say(f"{svc.label}: already running at {record.address}, pid {pid}{note}")
                continue
            if record is not None:
                say(f"{svc.label}: pid {record.process.pid} is gone; starting it again")
                stop_process(record.process, timeout_s=svc.stop_timeout_s)  # orphaned children
                state = state.with_service(svc.name, None)
                save_state(path, state)
            to_start.append(svc)
        for svc in to_start:
            ensure_port_free(svc.port, fix=f"stop it or set {svc.port_env}")
        for svc in to_start:
            say(f"{svc.label}: starting on {svc.address}")
            log = data_dir / "logs" / f"{svc.name}.log"
            handle = svc.start(log)
            state = state.with_service(svc.name, ServiceRecord(svc.address, handle, log))
            save_state(path, state)
            say(f"{svc.label}: ready at {svc.address}, pid {handle.pid}")
        bootstrap = settings.kafka_bootstrap or (state.broker.address if state.broker else None)
        if bootstrap is None:  # cannot happen: the broker is external, running or just started
            raise InfraError("no Kafka broker to create topics on")
        topics = settings.topics.all()
        say(f"creating topics on {bootstrap}")
        ensure_topics(bootstrap, topics, settings.partitions)
        each = f"{settings.partitions} partitions each"
        say(f"topics ready: {settings.topics.prefix}.* ({len(topics)} topics, {each})")
    return state


def _check_running(svc: _Service, record: ServiceRecord) -> None:
    try:
        wait_until_ready(
            lambda: svc.answers(record.address),
            what=f"the {svc.label} (pid {record.process.pid})",
            process=record.process,
            log_path=record.log,
            timeout_s=RUNNING_ANSWER_TIMEOUT_S,
        )
    except InfraError as exc:
        raise InfraError(
            f"{exc}; run `modelcanary down` then `modelcanary up` to restart it"
        ) from exc


def down(settings: Settings, on_progress: Progress | None = None) -> None:
    """Stop the embedded services and remove the state file; fine when nothing runs.

    The services' whole process trees are stopped together (SIGTERM, then SIGKILL
    after a timeout) before the state file is removed; if stopping fails, the file
    stays, so `down` can be retried. External services are left alone.
    """
    say = on_progress or _quiet
    data_dir = settings.data_dir.absolute()
    path = data_dir / settings.infra_state_path.name
    if not data_dir.is_dir():
        say("nothing was running")
        return
    with _locked(data_dir):
        try:
            state = load_state(path)
        except InfraError:
            path.unlink(missing_ok=True)
            say(f"removed the unreadable {path}; stop any broker or MLflow left running by hand")
            return
        if state.is_empty():
            say("nothing was running")
            return
        recorded = [
            (svc, rec) for svc in _services(settings, data_dir) if (rec := state.get(svc.name))
        ]
        was_running = stop_processes(
            [rec.process for _, rec in recorded],
            timeout_s=max(svc.stop_timeout_s for svc, _ in recorded),
        )
        for (svc, rec), running in zip(recorded, was_running, strict=True):
            pid = rec.process.pid
            say(f"{svc.label}: stopped (pid {pid})" if running else f"{svc.label}: was not running")
        save_state(path, EmbeddedState())


def status(settings: Settings) -> list[ServiceStatus]:
    """What runs: each service's state, address, pid and log file."""
    data_dir = settings.data_dir.absolute()
    state = load_state(data_dir / settings.infra_state_path.name)
    rows = []
    for svc in _services(settings, data_dir):
        record = state.get(svc.name)
        if svc.external:
            rows.append(ServiceStatus(svc.name, ServiceState.EXTERNAL, svc.external))
        elif record is None:
            rows.append(ServiceStatus(svc.name, ServiceState.STOPPED, None))
        else:
            running = record.process.is_running()
            rows.append(
                ServiceStatus(
                    svc.name,
                    ServiceState.RUNNING if running else ServiceState.STOPPED,
                    record.address,
                    record.process.pid,
                    record.log,
                )
            )
    return rows
