"""Settings: explicit, frozen, validated; the environment is read here and nowhere else.

Every address, topic name, directory and timeout has an embedded default. Set a
``MODELCANARY_*`` environment variable to point a component at external services::

    MODELCANARY_DATA_DIR          ./.modelcanary     embedded state, logs, artifacts
    MODELCANARY_KAFKA_BOOTSTRAP   (embedded broker)  e.g. kafka-1:9092,kafka-2:9092
    MODELCANARY_MLFLOW_URI        (embedded server)  e.g. http://mlflow:5000
    MODELCANARY_BROKER_PORT       19092              port of the embedded broker
    MODELCANARY_MLFLOW_PORT       15000              port of the embedded MLflow server
    MODELCANARY_MODEL             demo-classifier    registered model a serving replica serves
    MODELCANARY_TOPIC_PREFIX      modelcanary        topics are <prefix>.predictions, ...
    MODELCANARY_PARTITIONS        4                  partitions of every topic we create
    MODELCANARY_RECONCILE_S       1.0                how often routers re-read MLflow
    MODELCANARY_SESSION_TIMEOUT_MS 10000             consumer group session timeout
    MODELCANARY_HEARTBEAT_MS      3000               consumer group heartbeat interval
    MODELCANARY_MAX_POLL_INTERVAL_MS 300000          consumer group rebalance timeout (max time
                                                     between polls before a member is dropped)
    MODELCANARY_ADMIN_TOKEN       (unset)            bearer token of the admin endpoints
    MODELCANARY_WEBHOOK_URLS      (unset)            comma-separated URLs that receive decisions
    MODELCANARY_SERVING_WORKERS   1                  worker processes of one `bentoml serve`
    MODELCANARY_WORKER_CPUS       dedicated          pin each serving worker to one CPU:
                                                     dedicated (only when the replica may use
                                                     one CPU per worker, no more), auto
                                                     (always: worker i on the i-th usable
                                                     CPU), a CPU list such as 0-3,8, or off
    MODELCANARY_CHALLENGER_TIMEOUT_MS 200            a slower challenger call counts as an error
    MODELCANARY_CHALLENGER_INLINE true               a fast challenger is called on the request's
                                                     thread under a SIGALRM timer (false: always
                                                     on a thread of its own)
    MODELCANARY_HTTP_KEEPALIVE_S  75                 idle client connections are closed after this
                                                     (longer than clients' and load balancers' own
                                                     idle timeouts, so that they close first)
    MODELCANARY_MAX_REQUEST_BYTES 1048576            larger request bodies get 413
    MODELCANARY_MAX_HEADER_BYTES  16384              larger request headers (names + values) get 431
    MODELCANARY_MAX_HEADERS       100                requests with more header fields get 431
    MODELCANARY_MAX_BATCH_ROWS    1000               most rows one /predict_batch call may carry
    MODELCANARY_SPOOL_MAX_BYTES   268435456          disk spool of undelivered events, per worker
    MODELCANARY_EVENT_DELIVERY_TIMEOUT_MS 5000       unacknowledged events after this are spooled
    MODELCANARY_STATE_KEY         (dev key)          secret that signs evaluator snapshots
    MODELCANARY_SNAPSHOT_S        2.0                how often evaluators publish their state
    MODELCANARY_EVIDENCE_TTL_S    604800             evaluators forget a rollout no event reached
                                                     for this long (a week)
    MODELCANARY_SERVING_URL       http://127.0.0.1:3000  replica the `rollout` CLI talks to
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from modelcanary.cpu_affinity import parse_worker_cpus
from modelcanary.errors import ConfigError

ENV_PREFIX = "MODELCANARY_"
INFRA_STATE_FILE = "infra.json"

#: Every environment variable :func:`load_settings` reads. Deployment files (the
#: docker-compose topology) are checked against this list, so a variable that no code
#: reads cannot be set there by mistake; a test keeps it equal to what is really read.
ENV_VARS: tuple[str, ...] = tuple(
    ENV_PREFIX + name
    for name in (
        "DATA_DIR",
        "KAFKA_BOOTSTRAP",
        "MLFLOW_URI",
        "BROKER_PORT",
        "MLFLOW_PORT",
        "MODEL",
        "TOPIC_PREFIX",
        "PARTITIONS",
        "RECONCILE_S",
        "SESSION_TIMEOUT_MS",
        "HEARTBEAT_MS",
        "MAX_POLL_INTERVAL_MS",
        "ADMIN_TOKEN",
        "WEBHOOK_URLS",
        "SERVING_WORKERS",
        "WORKER_CPUS",
        "CHALLENGER_TIMEOUT_MS",
        "CHALLENGER_INLINE",
        "HTTP_KEEPALIVE_S",
        "MAX_REQUEST_BYTES",
        "MAX_HEADER_BYTES",
        "MAX_HEADERS",
        "MAX_BATCH_ROWS",
        "SPOOL_MAX_BYTES",
        "EVENT_DELIVERY_TIMEOUT_MS",
        "STATE_KEY",
        "SNAPSHOT_S",
        "EVIDENCE_TTL_S",
        "SERVING_URL",
    )
)


@dataclass(frozen=True)
class Topics:
    """Names of the Kafka topics, all derived from one prefix."""

    prefix: str = "modelcanary"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}.predictions"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}.outcomes"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def evaluator_state(self) -> str:
        """Partition snapshots of the evaluators (compacted on Apache Kafka)."""
        return f"{self.prefix}.evaluator-state"

    def all(self) -> tuple[str, ...]:
        return (
            self.predictions, self.outcomes, self.decisions, self.deadletter,
            self.evaluator_state,
        )  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """All runtime settings of one modelcanary process."""

    data_dir: Path = Path(".modelcanary")
    kafka_bootstrap: str | None = None
    mlflow_uri: str | None = None
    broker_port: int = 19092
    mlflow_port: int = 15000
    model_name: str = "demo-classifier"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    reconcile_interval_s: float = 1.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # Both clients send max_poll_interval_ms as the group's rebalance timeout: the embedded
    # broker holds a JoinGroup open that long, so tests set it small; Apache Kafka does not.
    # librdkafka also refuses one below session_timeout_ms (the evaluator says so).
    max_poll_interval_ms: int = 300_000
    admin_token: str | None = None
    webhook_urls: tuple[str, ...] = ()
    serving_workers: int = 1
    worker_cpus: str = "dedicated"
    challenger_timeout_ms: float = 200.0
    challenger_inline: bool = True
    http_keepalive_s: int = 75
    max_request_bytes: int = 1_048_576
    max_header_bytes: int = 16_384
    max_headers: int = 100
    max_batch_rows: int = 1_000
    spool_max_bytes: int = 256 * 1024 * 1024
    event_delivery_timeout_ms: int = 5_000
    state_key: str = "modelcanary-local-state-key"
    snapshot_interval_s: float = 2.0
    evidence_ttl_s: float = 7 * 24 * 3600.0
    serving_url: str = "http://127.0.0.1:3000"

    def __post_init__(self) -> None:
        for name in ("broker_port", "mlflow_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name}: {port} is not a TCP port (1-65535)")
        if self.partitions < 1:
            raise ConfigError(f"partitions: {self.partitions} must be at least 1")
        if self.snapshot_interval_s <= 0:
            raise ConfigError("snapshot_interval_s: must be > 0 seconds")
        if self.evidence_ttl_s <= 0:
            raise ConfigError("evidence_ttl_s (MODELCANARY_EVIDENCE_TTL_S): must be > 0 seconds")
        if self.reconcile_interval_s <= 0:
            raise ConfigError("reconcile_interval_s: must be > 0 seconds")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                "heartbeat_interval_ms: must be smaller than session_timeout_ms "
                f"({self.heartbeat_interval_ms} >= {self.session_timeout_ms})"
            )
        if self.max_poll_interval_ms < 1:
            raise ConfigError(f"max_poll_interval_ms: {self.max_poll_interval_ms} must be > 0 ms")
        for url in self.webhook_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook_urls: {url.split('?')[0][:40]!r} is not an http(s) URL")
        if not self.model_name.strip():
            raise ConfigError("model_name: must not be empty (set MODELCANARY_MODEL)")
        self._check_serving()

    def _check_serving(self) -> None:
        at_least_one = (
            "serving_workers", "http_keepalive_s", "max_request_bytes", "max_header_bytes",
            "max_headers", "max_batch_rows",
        )  # fmt: skip
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)} must be at least 1")
        if self.challenger_timeout_ms <= 0:
            raise ConfigError("challenger_timeout_ms: must be > 0 milliseconds")
        parse_worker_cpus(self.worker_cpus)
        if self.event_delivery_timeout_ms < 100:
            raise ConfigError("event_delivery_timeout_ms: must be at least 100 milliseconds")
        if self.spool_max_bytes < 1024 * 1024:
            raise ConfigError(f"spool_max_bytes: {self.spool_max_bytes} must be at least 1 MiB")

    @property
    def infra_state_path(self) -> Path:
        return self.data_dir / INFRA_STATE_FILE

    @property
    def spool_dir(self) -> Path:
        """Where serving workers spool the events Kafka could not take."""
        return self.data_dir / "spool"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def resolved_kafka_bootstrap(self) -> str:
        """The bootstrap servers: configured ones, else the running embedded broker's."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        state = self._embedded_state()
        address = state.get("broker", {}).get("address")
        if not address:
            raise ConfigError(
                "Kafka is not configured and the embedded broker is not running: "
                "run `modelcanary up` or set MODELCANARY_KAFKA_BOOTSTRAP"
            )
        return str(address)

    def resolved_mlflow_uri(self) -> str:
        """The MLflow tracking URI: configured one, else the running embedded server's."""
        if self.mlflow_uri:
            return self.mlflow_uri
        state = self._embedded_state()
        address = state.get("mlflow", {}).get("address")
        if not address:
            raise ConfigError(
                "MLflow is not configured and the embedded server is not running: "
                "run `modelcanary up` or set MODELCANARY_MLFLOW_URI"
            )
        return str(address)

    def _embedded_state(self) -> dict:
        try:
            return json.loads(self.infra_state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{self.infra_state_path} is unreadable ({exc}); run `modelcanary down` "
                "then `modelcanary up` to recreate it"
            ) from exc


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}: {raw!r} is not an integer") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}: {raw!r} is not a number") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name}: {raw!r} is not true or false")


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(ENV_PREFIX + name)
    return raw if raw else None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``MODELCANARY_*`` variables (``os.environ`` by default)."""
    env = os.environ if env is None else env
    defaults = Settings()
    return Settings(
        data_dir=Path(_str(env, "DATA_DIR") or defaults.data_dir).absolute(),
        kafka_bootstrap=_str(env, "KAFKA_BOOTSTRAP"),
        mlflow_uri=_str(env, "MLFLOW_URI"),
        broker_port=_int(env, "BROKER_PORT", defaults.broker_port),
        mlflow_port=_int(env, "MLFLOW_PORT", defaults.mlflow_port),
        model_name=_str(env, "MODEL") or defaults.model_name,
        topics=Topics(prefix=_str(env, "TOPIC_PREFIX") or defaults.topics.prefix),
        partitions=_int(env, "PARTITIONS", defaults.partitions),
        reconcile_interval_s=_float(env, "RECONCILE_S", defaults.reconcile_interval_s),
        session_timeout_ms=_int(env, "SESSION_TIMEOUT_MS", defaults.session_timeout_ms),
        heartbeat_interval_ms=_int(env, "HEARTBEAT_MS", defaults.heartbeat_interval_ms),
        max_poll_interval_ms=_int(env, "MAX_POLL_INTERVAL_MS", defaults.max_poll_interval_ms),
        admin_token=_str(env, "ADMIN_TOKEN"),
        webhook_urls=tuple(
            u.strip() for u in (_str(env, "WEBHOOK_URLS") or "").split(",") if u.strip()
        ),
        serving_workers=_int(env, "SERVING_WORKERS", defaults.serving_workers),
        worker_cpus=_str(env, "WORKER_CPUS") or defaults.worker_cpus,
        challenger_timeout_ms=_float(env, "CHALLENGER_TIMEOUT_MS", defaults.challenger_timeout_ms),
        challenger_inline=_bool(env, "CHALLENGER_INLINE", defaults.challenger_inline),
        http_keepalive_s=_int(env, "HTTP_KEEPALIVE_S", defaults.http_keepalive_s),
        max_request_bytes=_int(env, "MAX_REQUEST_BYTES", defaults.max_request_bytes),
        max_header_bytes=_int(env, "MAX_HEADER_BYTES", defaults.max_header_bytes),
        max_headers=_int(env, "MAX_HEADERS", defaults.max_headers),
        max_batch_rows=_int(env, "MAX_BATCH_ROWS", defaults.max_batch_rows),
        spool_max_bytes=_int(env, "SPOOL_MAX_BYTES", defaults.spool_max_bytes),
        event_delivery_timeout_ms=_int(
            env, "EVENT_DELIVERY_TIMEOUT_MS", defaults.event_delivery_timeout_ms
        ),
        state_key=_str(env, "STATE_KEY") or defaults.state_key,
        snapshot_interval_s=_float(env, "SNAPSHOT_S", defaults.snapshot_interval_s),
        evidence_ttl_s=_float(env, "EVIDENCE_TTL_S", defaults.evidence_ttl_s),
        serving_url=_str(env, "SERVING_URL") or defaults.serving_url,
    )
