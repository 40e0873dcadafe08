"""The infra state file and what status/down make of it, without starting any service."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelcanary.config import Settings, load_settings
from modelcanary.errors import InfraError
from modelcanary.infra import embedded
from modelcanary.infra.embedded import ServiceState
from modelcanary.infra.processes import ProcessHandle, start_detached, stop_process
from modelcanary.infra.state import EmbeddedState, ServiceRecord, load_state, save_state

DEAD = ProcessHandle(pid=2**22 + 12345, create_time=1.0)  # above Linux's default pid_max


def _record(address: str, handle: ProcessHandle, tmp_path: Path) -> ServiceRecord:
    return ServiceRecord(address=address, process=handle, log=tmp_path / "x.log")


def test_saved_state_is_the_contract_config_reads(tmp_path: Path) -> None:
    settings = load_settings({"MODELCANARY_DATA_DIR": str(tmp_path)})
    state = EmbeddedState(
        broker=_record("127.0.0.1:19999", DEAD, tmp_path),
        mlflow=_record("http://127.0.0.1:15999", DEAD, tmp_path),
    )
    save_state(settings.infra_state_path, state)
    raw = json.loads(settings.infra_state_path.read_text())
    assert set(raw["broker"]) >= {"address", "pid", "log"}
    assert settings.resolved_kafka_bootstrap() == "127.0.0.1:19999"
    assert settings.resolved_mlflow_uri() == "http://127.0.0.1:15999"
    assert load_state(settings.infra_state_path) == state


def test_empty_state_removes_the_file_and_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "infra.json"
    save_state(path, EmbeddedState(broker=_record("127.0.0.1:1", DEAD, tmp_path)))
    assert path.exists()
    save_state(path, EmbeddedState())
    assert not path.exists()
    assert load_state(path) == EmbeddedState()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"broker": {"address": 5}}'])
def test_unreadable_state_says_how_to_fix(tmp_path: Path, content: str) -> None:
    path = tmp_path / "infra.json"
    path.write_text(content)
    with pytest.raises(InfraError, match="modelcanary down"):
        load_state(path)


def test_status_of_nothing_recorded_is_stopped(tmp_path: Path) -> None:
    rows = embedded.status(Settings(data_dir=tmp_path))
    assert [(r.name, r.state, r.address) for r in rows] == [
        ("broker", ServiceState.STOPPED, None),
        ("mlflow", ServiceState.STOPPED, None),
    ]


def test_status_tells_running_from_stale(tmp_path: Path) -> None:
    live = start_detached(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "l.log", env={}
    )
    try:
        settings = Settings(data_dir=tmp_path)
        state = EmbeddedState(
            broker=_record("127.0.0.1:19999", DEAD, tmp_path),
            mlflow=_record("http://127.0.0.1:15999", live, tmp_path),
        )
        save_state(settings.infra_state_path, state)
        rows = {r.name: r for r in embedded.status(settings)}
        assert rows["broker"].state is ServiceState.STOPPED
        assert rows["broker"].pid == DEAD.pid
        assert rows["mlflow"].state is ServiceState.RUNNING
        assert rows["mlflow"].pid == live.pid
    finally:
        stop_process(live, timeout_s=1.0)


def test_status_of_external_services_shows_configured_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap="k1:9092,k2:9092", mlflow_uri="http://m")
    rows = {r.name: r for r in embedded.status(settings)}
    assert rows["broker"].state is ServiceState.EXTERNAL
    assert rows["broker"].address == "k1:9092,k2:9092"
    assert rows["mlflow"].state is ServiceState.EXTERNAL
    assert rows["mlflow"].address == "http://m"


def test_down_with_stale_records_removes_the_state(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    save_state(
        settings.infra_state_path, EmbeddedState(broker=_record("127.0.0.1:1", DEAD, tmp_path))
    )
    said: list[str] = []
    embedded.down(settings, on_progress=said.append)
    assert not settings.infra_state_path.exists()
    assert said == ["Kafka broker: was not running"]


def test_down_with_nothing_running_or_no_data_dir_is_fine(tmp_path: Path) -> None:
    said: list[str] = []
    embedded.down(Settings(data_dir=tmp_path / "never-created"), on_progress=said.append)
    embedded.down(Settings(data_dir=tmp_path), on_progress=said.append)
    assert said == ["nothing was running", "nothing was running"]
    assert not (tmp_path / "never-created").exists()


def test_down_removes_an_unreadable_state_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    settings.infra_state_path.write_text("{garbage")
    embedded.down(settings)
    assert not settings.infra_state_path.exists()
