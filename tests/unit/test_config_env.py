"""``config.ENV_VARS`` is exactly what :func:`load_settings` reads, and each one takes effect."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from modelcanary.config import ENV_PREFIX, ENV_VARS, Settings, load_settings
from modelcanary.errors import ConfigError

# A valid value, different from the default, for every variable.
SAMPLES: Mapping[str, str] = {
    "DATA_DIR": "/tmp/modelcanary-elsewhere",
    "KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
    "MLFLOW_URI": "http://mlflow:5000",
    "BROKER_PORT": "29092",
    "MLFLOW_PORT": "25000",
    "MODEL": "fraud-model",
    "TOPIC_PREFIX": "staging",
    "PARTITIONS": "12",
    "RECONCILE_S": "2.5",
    "SESSION_TIMEOUT_MS": "45000",
    "HEARTBEAT_MS": "5000",
    "MAX_POLL_INTERVAL_MS": "1000",
    "ADMIN_TOKEN": "secret",
    "WEBHOOK_URLS": "https://hooks.example/modelcanary",
    "SERVING_WORKERS": "2",
    "WORKER_CPUS": "0-1",
    "CHALLENGER_TIMEOUT_MS": "150",
    "CHALLENGER_INLINE": "false",
    "HTTP_KEEPALIVE_S": "30",
    "MAX_REQUEST_BYTES": "2048",
    "MAX_HEADER_BYTES": "8192",
    "MAX_HEADERS": "50",
    "MAX_BATCH_ROWS": "10",
    "SPOOL_MAX_BYTES": str(2 * 1024 * 1024),
    "EVENT_DELIVERY_TIMEOUT_MS": "1000",
    "STATE_KEY": "a-real-secret",
    "SNAPSHOT_S": "0.5",
    "EVIDENCE_TTL_S": "86400",
    "SERVING_URL": "http://serving:3000",
}


class RecordingEnv(dict[str, str]):
    """An environment that remembers which names were looked up."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.read: list[str] = []

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        return super().__getitem__(key)


def test_env_vars_is_exactly_what_load_settings_reads() -> None:
    env = RecordingEnv()
    load_settings(env)
    assert len(ENV_VARS) == len(set(ENV_VARS))
    assert set(env.read) == set(ENV_VARS)
    assert all(name.startswith(ENV_PREFIX) for name in ENV_VARS)


@pytest.mark.parametrize("name", ENV_VARS)
def test_each_variable_changes_the_settings(name: str) -> None:
    short = name.removeprefix(ENV_PREFIX)
    assert short in SAMPLES, f"add a sample value of {name} to SAMPLES"
    assert load_settings({name: SAMPLES[short]}) != load_settings({})


def test_max_poll_interval_is_validated_with_its_field_name() -> None:
    assert load_settings({}).max_poll_interval_ms == Settings().max_poll_interval_ms == 300_000
    assert load_settings({f"{ENV_PREFIX}MAX_POLL_INTERVAL_MS": "1500"}).max_poll_interval_ms == 1500
    with pytest.raises(ConfigError, match="max_poll_interval_ms"):
        load_settings({f"{ENV_PREFIX}MAX_POLL_INTERVAL_MS": "0"})
