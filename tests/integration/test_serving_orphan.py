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
from modelcanary.infra.processes import free_port
from modelcanary.infra.topics import ensure_topics
from modelcanary.launch import start_serving
from modelcanary.registry import Registry

pytestmark = pytest.mark.integration


def _workers(leader: psutil.Process) -> list[psutil.Process]:
    return [
        p
        for p in leader.children(recursive=True)
        if any("_bentoml_impl.worker" in part for part in p.cmdline())
    ]


def test_workers_stop_when_their_bentoml_serve_is_killed(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
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
    serving = start_serving(settings, free_port(), workers=2)
    workers: list[psutil.Process] = []
    try:
        workers = _workers(psutil.Process(serving.process.pid))
        assert len(workers) == 2
        os.kill(serving.process.pid, signal.SIGKILL)  # no chance to stop its workers
        _, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"workers {[p.pid for p in alive]} outlived their bentoml serve"
        assert "this worker stops" in serving.log.read_text()
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()
        serving.stop(timeout_s=5)
