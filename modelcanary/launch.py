"""Start modelcanary's own components as background processes: serving, evaluator, controller.

Used by the demo and the integration tests; each component gets its configuration only
through ``MODELCANARY_*`` environment variables, exactly as in production.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from modelcanary.config import Settings
from modelcanary.cpu_affinity import check_worker_cpus
from modelcanary.infra.child_env import child_env
from modelcanary.infra.processes import (
    ProcessHandle,
    http_ok,
    start_detached,
    stop_process,
    wait_until_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Component:
    name: str
    process: ProcessHandle
    log: Path
    url: str | None = None

    def stop(self, timeout_s: float = 10.0) -> None:
        stop_process(self.process, timeout_s=timeout_s)


def component_env(settings: Settings, model: str | None = None) -> dict[str, str]:
    """Environment that points a child at the same Kafka, MLflow and topics as ``settings``."""
    return child_env(
        {
            "MODELCANARY_DATA_DIR": str(settings.data_dir),
            "MODELCANARY_KAFKA_BOOTSTRAP": settings.resolved_kafka_bootstrap(),
            "MODELCANARY_MLFLOW_URI": settings.resolved_mlflow_uri(),
            "MODELCANARY_MODEL": model or settings.model_name,
            "MODELCANARY_TOPIC_PREFIX": settings.topics.prefix,
            "MODELCANARY_PARTITIONS": str(settings.partitions),
            "MODELCANARY_RECONCILE_S": str(settings.reconcile_interval_s),
            "MODELCANARY_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "MODELCANARY_HEARTBEAT_MS": str(settings.heartbeat_interval_ms),
            "MODELCANARY_MAX_POLL_INTERVAL_MS": str(settings.max_poll_interval_ms),
            "MODELCANARY_STATE_KEY": settings.state_key,
            "MODELCANARY_SNAPSHOT_S": str(settings.snapshot_interval_s),
            "MODELCANARY_EVIDENCE_TTL_S": str(settings.evidence_ttl_s),
            "MODELCANARY_SERVING_WORKERS": str(settings.serving_workers),
            "MODELCANARY_WORKER_CPUS": settings.worker_cpus,
            "MODELCANARY_CHALLENGER_TIMEOUT_MS": str(settings.challenger_timeout_ms),
            "MODELCANARY_CHALLENGER_INLINE": str(settings.challenger_inline).lower(),
            "MODELCANARY_HTTP_KEEPALIVE_S": str(settings.http_keepalive_s),
            "MODELCANARY_MAX_REQUEST_BYTES": str(settings.max_request_bytes),
            "MODELCANARY_MAX_BATCH_ROWS": str(settings.max_batch_rows),
            "MODELCANARY_SPOOL_MAX_BYTES": str(settings.spool_max_bytes),
            "MODELCANARY_EVENT_DELIVERY_TIMEOUT_MS": str(settings.event_delivery_timeout_ms),
            "MODELCANARY_ADMIN_TOKEN": settings.admin_token or "",
            "MODELCANARY_WEBHOOK_URLS": ",".join(settings.webhook_urls),
            "BENTOML_HOME": str(settings.data_dir / "bentoml"),
            "PYTHONUNBUFFERED": "1",
        }
    )


def bentoml_serve_command(
    settings: Settings,
    host: str,
    port: int,
    working_dir: Path,
    service: str = "serving.service:ModelcanaryService",
) -> list[str]:
    """The ``bentoml serve`` command line of ``service`` (default: the modelcanary service).

    uvicorn closes idle connections after 5 s by default, which is also httpx's idle
    expiry: a client that reuses a connection just as the server closes it gets a reset
    (``httpx.ReadError``) for a request the server never read. The server therefore keeps
    idle connections longer than its clients do (``MODELCANARY_HTTP_KEEPALIVE_S``).
    Raises :class:`ConfigError` if ``MODELCANARY_WORKER_CPUS`` names a CPU this process
    may not use.
    """
    check_worker_cpus(settings.worker_cpus)
    return [
        sys.executable, "-m", "bentoml", "serve", service,
        "--host", host, "--port", str(port), "--working-dir", str(working_dir),
        "--timeout-keep-alive", str(settings.http_keepalive_s),
    ]  # fmt: skip


def start_serving(
    settings: Settings,
    port: int,
    model: str | None = None,
    timeout_s: float = 90.0,
    workers: int | None = None,
) -> Component:
    """``bentoml serve`` of the modelcanary service; returns once ``/readyz`` answers 200.

    ``workers`` (default: ``settings.serving_workers``) worker processes share the port.
    """
    if workers is not None:
        settings = settings.with_overrides(serving_workers=workers)
    log = settings.data_dir / "logs" / f"serving-{port}.log"
    command = bentoml_serve_command(settings, "127.0.0.1", port, REPO_ROOT)
    process = start_detached(
        command, log_path=log, env=component_env(settings, model), cwd=REPO_ROOT
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(
        lambda: http_ok(f"{url}/readyz"),
        what="bentoml serve",
        process=process,
        log_path=log,
        timeout_s=timeout_s,
    )
    return Component("serving", process, log, url)


def start_worker(settings: Settings, command: str, timeout_s: float = 30.0) -> Component:
    """``modelcanary evaluate`` or ``modelcanary control`` in the background."""
    log = settings.data_dir / "logs" / f"{command}.log"
    process = start_detached(
        [sys.executable, "-m", "modelcanary", command],
        log_path=log,
        env=component_env(settings),
        cwd=REPO_ROOT,
    )
    return Component(command, process, log)
