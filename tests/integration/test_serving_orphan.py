"""A serving worker whose ``bentoml serve`` is killed stops by itself instead of serving on."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest

from modelcanary.config import Settings, Topics
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.infra.processes import free_port, start_detached, stop_process, wait_until_ready
from modelcanary.infra.topics import ensure_topics
from modelcanary.launch import REPO_ROOT, bentoml_serve_command, component_env, start_serving
from modelcanary.registry import Registry

pytestmark = pytest.mark.integration


def _workers(leader: psutil.Process) -> list[psutil.Process]:
    return [
        p
        for p in leader.children(recursive=True)
        if any("_bentoml_impl.worker" in part for part in p.cmdline())
    ]


def _settings(kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path) -> Settings:
    """Settings for a model of its own, registered with a champion."""
    model = f"orphan-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, mlflow_uri=mlflow_uri,
        model_name=model, topics=Topics(f"o{uuid.uuid4().hex[:6]}"), partitions=1,
        reconcile_interval_s=0.5,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    dataset = load_demo_dataset()
    Registry(mlflow_uri).register_sklearn(
        model, train_variant("baseline", dataset), dataset.X_train.head(3)
    )
    return settings


def _kill_and_expect_the_workers_to_stop(leader: int, workers: list[psutil.Process]) -> None:
    os.kill(leader, signal.SIGKILL)  # no chance to stop its workers
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers {[p.pid for p in alive]} outlived their bentoml serve"


def test_workers_stop_when_their_bentoml_serve_is_killed(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, mlflow_uri, tmp_path)
    serving = start_serving(settings, free_port(), workers=2)
    workers: list[psutil.Process] = []
    try:
        workers = _workers(psutil.Process(serving.process.pid))
        assert len(workers) == 2
        _kill_and_expect_the_workers_to_stop(serving.process.pid, workers)
        assert "this worker stops" in serving.log.read_text()
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()
        serving.stop(timeout_s=5)


def test_workers_still_starting_stop_when_their_bentoml_serve_is_killed(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    """Killed before any worker is ready: the workers only ever see init as their parent
    once they get to start their watch, and must still notice."""
    settings = _settings(kafka_bootstrap, mlflow_uri, tmp_path).with_overrides(serving_workers=2)
    command = bentoml_serve_command(settings, "127.0.0.1", free_port(), REPO_ROOT)
    log = tmp_path / "serving.log"
    process = start_detached(command, log_path=log, env=component_env(settings), cwd=REPO_ROOT)
    workers: list[psutil.Process] = []
    try:
        leader = psutil.Process(process.pid)
        wait_until_ready(
            lambda: len(_workers(leader)) == 2, what="two workers", process=process,
            log_path=log, timeout_s=30,
        )  # fmt: skip
        workers = _workers(leader)
        assert "initialized" not in log.read_text()  # killed while they start
        _kill_and_expect_the_workers_to_stop(process.pid, workers)
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()
        stop_process(process, timeout_s=5)
