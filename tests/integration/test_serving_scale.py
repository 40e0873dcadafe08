"""Two replicas, one of them with two workers: every worker routes every unit alike, and a
decision on the decisions topic is applied by all of them within a second.

The two-worker replica pins its workers, the other does not: every test holds for both.
Where the process may use exactly two CPUs the two-worker replica runs with the default,
``MODELCANARY_WORKER_CPUS=dedicated`` (one CPU per worker: it pins), elsewhere with
``auto``; the one-worker replica always with the default (more CPUs than workers: it
does not pin, unless there is only one CPU).

Routers here re-read MLflow only every 30 s on their own, so only the decision watcher
can explain a change seen within a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from modelcanary.config import Settings
from modelcanary.controller import Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.events import Action, DecisionEvent
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import EventPublisher
from modelcanary.launch import Component, start_serving
from modelcanary.policy import Policy, Step
from modelcanary.registry import Registry
from tests.conftest import free_port
from tests.integration.serving_stack import clean_mlflow_env, serving_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPLY_WITHIN_S = 1.0
UNITS = 80


@dataclass
class Replicas:
    settings: Settings
    controller: Controller
    a: Component  # two workers
    b: Component  # one worker
    row: dict[str, float]
    versions: dict[str, str]


@pytest.fixture(scope="module")
def replicas(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    settings = serving_settings(
        tmp_path_factory.mktemp("scale"), kafka_bootstrap, mlflow_uri, reconcile_interval_s=30.0
    )
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    model = settings.model_name
    sample = dataset.X_train.head(3)
    versions = {v: registry.register_sklearn(model, train_variant(v, dataset), sample)
                for v in ("baseline", "good")}  # fmt: skip
    controller = Controller(registry)
    controller.start(model, versions["good"], Policy(steps=(Step(0.3), Step(1.0))))
    with clean_mlflow_env(), ThreadPoolExecutor(2) as pool:  # both replicas at once
        two_cpus = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) == 2
        pinned = settings.with_overrides(worker_cpus="dedicated" if two_cpus else "auto")
        starting = [
            pool.submit(start_serving, replica, free_port(), workers=workers)
            for replica, workers in ((pinned, 2), (settings, 1))
        ]
    started = [f.result() for f in starting if f.exception() is None]
    try:
        assert len(started) == 2, [f.exception() for f in starting]
        a, b = started
        yield Replicas(settings, controller, a, b, dataset.X_test.iloc[0].to_dict(), versions)
    finally:
        for component in started:
            component.stop()


# No keep-alive: every call opens a new connection, which the kernel may hand to any worker.
_CLIENT = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def _fresh(url: str, path: str, body: dict | None = None) -> dict:
    """One call on a new connection."""
    response = _CLIENT.get(url + path) if body is None else _CLIENT.post(url + path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _workers(url: str, expected: int, timeout_s: float = 30.0) -> dict[int, dict]:
    """Health of each worker behind ``url``, by pid (polled until ``expected`` answered)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < expected:
        assert time.monotonic() < deadline, f"only workers {sorted(seen)} answered"
        health = _fresh(url, "/healthz")
        seen[health["worker_pid"]] = health
    return seen


def _thread_cpus(pid: int) -> set[tuple[int, ...]]:
    """The distinct CPU sets the threads of process ``pid`` may run on."""
    cpus: set[tuple[int, ...]] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cpus.add(tuple(sorted(os.sched_getaffinity(int(tid)))))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return cpus


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_pinned_workers_keep_every_thread_on_a_cpu_of_their_own(replicas: Replicas) -> None:
    usable = sorted(os.sched_getaffinity(0))
    pinned = {pid: _thread_cpus(pid) for pid in _workers(replicas.a.url or "", 2)}
    assert all(len(cpus) == 1 and len(next(iter(cpus))) == 1 for cpus in pinned.values()), pinned
    chosen = sorted(next(iter(cpus))[0] for cpus in pinned.values())
    assert chosen == sorted(usable[i % len(usable)] for i in range(2))
    (free,) = _workers(replicas.b.url or "", 1)
    assert _thread_cpus(free) == {tuple(usable)}


def test_every_worker_of_every_replica_routes_each_unit_alike(replicas: Replicas) -> None:
    urls = [replicas.a.url or "", replicas.b.url or ""]
    assert len(_workers(urls[0], 2)) == 2
    answers: dict[str, set[str]] = {}
    for i in range(UNITS):
        unit = f"user-{i}"
        for url in urls:
            for _ in range(2):
                body = _fresh(url, "/predict", {"features": replicas.row, "unit_id": unit})
                answers.setdefault(unit, set()).add(body["version"])
    assert all(len(versions) == 1 for versions in answers.values()), answers
    share = sum(v == {replicas.versions["good"]} for v in answers.values()) / len(answers)
    assert 0.3 - 5 * (0.21 / UNITS) ** 0.5 < share < 0.3 + 5 * (0.21 / UNITS) ** 0.5


def test_a_decision_reaches_every_worker_within_a_second(replicas: Replicas) -> None:
    settings, controller = replicas.settings, replicas.controller
    model = settings.model_name
    urls = {"a": replicas.a.url or "", "b": replicas.b.url or ""}
    expected = {"a": 2, "b": 1}
    for name, url in urls.items():
        for health in _workers(url, expected[name]).values():
            assert health["rollout_label"] == "running:0"
    rollout = controller.store.load(model)
    assert rollout is not None
    decision = DecisionEvent(
        model=model,
        rollout_id=rollout.rollout_id,
        action=Action.ADVANCE,
        from_state="running:0",
        to_state="running:1",
        traffic_fraction=1.0,
        reason="test: advance",
    )
    publisher = EventPublisher(settings.kafka_bootstrap or "")
    publisher.publish(settings.topics.decisions, decision)
    assert publisher.flush(5.0)
    publisher.close()
    time.sleep(0.3)  # the controller reads the decision, then writes MLflow
    assert controller.apply(decision).applied
    applied_at = time.monotonic()
    pending = {(name, pid) for name in urls for pid in _workers(urls[name], expected[name])}
    while pending:
        elapsed = time.monotonic() - applied_at
        assert elapsed < APPLY_WITHIN_S, f"not applied after {elapsed:.2f} s by {pending}"
        for name, url in urls.items():
            health = _fresh(url, "/healthz")
            if health["rollout_label"] == "running:1" and health["traffic_fraction"] == 1.0:
                pending.discard((name, health["worker_pid"]))
    for url in urls.values():
        for i in range(20):
            body = _fresh(url, "/predict", {"features": replicas.row, "unit_id": f"user-{i}"})
            assert body["version"] == replicas.versions["good"]
