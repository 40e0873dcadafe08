"""Helpers of the serving integration tests: settings, rollouts, reading events back."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.events import Action, DecisionEvent, PredictionEvent, decode_prediction
from modelcanary.kafka_io import RecordConsumer
from modelcanary.launch import Component, start_serving
from modelcanary.policy import Policy, Step


def serving_settings(
    data_dir: Path, kafka_bootstrap: str, mlflow_uri: str, **overrides: object
) -> Settings:
    """Settings with a model name and topic prefix unique to the caller."""
    base = Settings(
        data_dir=data_dir,
        kafka_bootstrap=kafka_bootstrap,
        mlflow_uri=mlflow_uri,
        model_name=f"serve-{uuid.uuid4().hex[:8]}",
        topics=Topics(prefix=f"t{uuid.uuid4().hex[:8]}"),
        partitions=3,
        reconcile_interval_s=0.3,
    )
    return base.with_overrides(**overrides)


@contextlib.contextmanager
def clean_mlflow_env() -> Iterator[None]:
    """Children started inside get no MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI.

    Registering a model in this process sets them (MLflow's fluent API exports them), and
    a child would inherit them; a serving replica in production has neither.
    """
    saved = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
             if k in os.environ}  # fmt: skip
    try:
        yield
    finally:
        os.environ.update(saved)


def start_clean_serving(settings: Settings, port: int, **kwargs: Any) -> Component:
    """:func:`modelcanary.launch.start_serving` from an environment without MLflow URIs."""
    with clean_mlflow_env():
        return start_serving(settings, port, **kwargs)


def end_rollout(controller: Controller, model: str) -> None:
    """Abort the model's rollout if one is going on (as an operator would)."""
    rollout = controller.store.load(model)
    if rollout is None or rollout.state.terminal:
        return
    decision = DecisionEvent(
        model=model,
        rollout_id=rollout.rollout_id,
        action=Action.ABORT,
        from_state=rollout.label,
        to_state="aborted",
        traffic_fraction=0.0,
        reason="test cleanup",
    )
    assert controller.apply(decision).applied


def start_rollout(
    controller: Controller, model: str, version: str, fraction: float, mode: str = "canary"
) -> None:
    end_rollout(controller, model)
    controller.start(model, version, Policy(steps=(Step(fraction, mode=mode),)))  # type: ignore[arg-type]


def wait_for_health(
    client: httpx.Client, condition: Callable[[dict], bool], timeout_s: float = 10.0
) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        health = client.get("/healthz").json()
        if condition(health):
            return health
        assert time.monotonic() < deadline, f"timed out; last health: {health}"
        time.sleep(0.05)


def read_predictions(
    bootstrap: str,
    topic: str,
    request_ids: Iterable[str],
    per_request: int,
    timeout_s: float = 15.0,
) -> dict[str, list[PredictionEvent]]:
    """Prediction events of ``request_ids``, read from the start, until each has ``per_request``."""
    wanted = set(request_ids)
    found: dict[str, list[PredictionEvent]] = {r: [] for r in wanted}
    consumer = RecordConsumer(bootstrap, [topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for record in consumer.poll(300):
                event = decode_prediction(record.value)
                if event.request_id in wanted:
                    found[event.request_id].append(event)
            if all(len(events) >= per_request for events in found.values()):
                break
    finally:
        consumer.close()
    return found
