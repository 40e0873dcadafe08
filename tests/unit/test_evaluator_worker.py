"""The evaluator worker's consumer settings, checked before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcanary.config import Settings
from modelcanary.errors import ConfigError
from modelcanary.evaluator_worker import CONSUMER_FETCH, EvaluatorWorker, consumer_config


def test_a_poll_interval_below_the_session_timeout_is_a_config_error(tmp_path: Path) -> None:
    # librdkafka refuses it; nothing listens on port 1, and nothing needs to.
    settings = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1",
                        session_timeout_ms=10_000, max_poll_interval_ms=1_000)  # fmt: skip
    with pytest.raises(ConfigError, match="MODELCANARY_MAX_POLL_INTERVAL_MS"):
        EvaluatorWorker(settings)


def test_the_consumer_never_commits_by_itself_and_extra_settings_win() -> None:
    config = consumer_config("kafka:9092", **{"group.id": "g", "fetch.wait.max.ms": 7})
    assert config["enable.auto.commit"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["group.id"] == "g" and config["fetch.wait.max.ms"] == 7
    assert all(config[k] == v for k, v in CONSUMER_FETCH.items() if k != "fetch.wait.max.ms")
