"""Several registered models roll out at the same time on one platform, independently.

Real processes throughout: one ``bentoml serve`` per model (A and B), ONE evaluator and
ONE controller shared by all, on shared topics. The controller is started with
``MODELCANARY_MODEL`` naming a model that does not even exist: it must find every
rollout on its own. A's challenger is good and must be promoted through every step;
B's is bad and must be rolled back at its first step. A third model, C, has a rollout
but no replica and no traffic at all: the judge must still find it (in the registry,
since no snapshot names it) and end it when its step times out. Nothing of one
rollout may leak into another: decisions, audit runs, evidence (sample counts), routing.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from modelcanary.admin_client import AdminClient
from modelcanary.audit import AuditLog
from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.evaluator_worker import read_latest_snapshots
from modelcanary.events import Action, Arm, DecisionEvent, decode_decision, decode_prediction
from modelcanary.infra.topics import ensure_topics
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import RecordConsumer
from modelcanary.launch import start_serving, start_worker
from modelcanary.policy import Policy, Step, default_policy, policy_from_dict
from modelcanary.registry import Registry
from modelcanary.rollout import Rollout
from modelcanary.rollout_store import RolloutStore
from modelcanary.simulate import TrafficConfig, TrafficSimulator, TrafficStats
from tests.conftest import free_port
from tests.integration.serving_stack import clean_mlflow_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "concurrent-token"
RATES = {"A": 60.0, "B": 40.0}  # different rates: mixed-up evidence would show in the counts
# B gets an extra version so that its challenger's number (3) is not one of A's.
PLAN = {"A": ("baseline", "good"), "B": ("baseline", "good", "bad"), "C": ("baseline", "good")}
SERVED = ("A", "B")


@dataclass(frozen=True)
class Model:
    key: str
    name: str
    champion: str
    challenger: str
    url: str

    @property
    def versions(self) -> set[str]:
        return {self.champion, self.challenger}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def two_step_policy() -> dict:
    """Short steps, and the critical gates only: the latency gate needs the most samples
    and proves nothing here."""
    policy = default_policy().to_dict()
    policy["steps"] = [
        {"traffic_fraction": 0.5, "min_samples": 60, "min_duration_s": 3, "max_duration_s": 200},
        {"traffic_fraction": 0.8, "min_samples": 60, "min_duration_s": 3, "max_duration_s": 200},
    ]
    policy["gates"] = [g for g in policy["gates"] if g["critical"]]
    policy_from_dict(policy)  # valid before we send it
    return policy


def read_topic(bootstrap: str, topic: str, decode: Callable, idle_s: float = 2.0) -> list:
    """Every event of ``topic`` from the beginning, until nothing new comes for ``idle_s``."""
    consumer = RecordConsumer(bootstrap, [topic])
    events, last = [], time.monotonic()
    try:
        while time.monotonic() - last < idle_s:
            for record in consumer.poll(300):
                events.append(decode(record.value))
                last = time.monotonic()
    finally:
        consumer.close()
    return events


def merged_evidence(settings: Settings) -> tuple[dict[str, RolloutEvidence], dict[str, str]]:
    """Evidence per rollout merged over the evaluator's latest partition snapshots, and
    the model each rollout belongs to according to them."""
    snapshots = read_latest_snapshots(
        settings.resolved_kafka_bootstrap(), settings.topics.evaluator_state,
        settings.state_key.encode(),
    )  # fmt: skip
    parts: dict[str, list[RolloutEvidence]] = defaultdict(list)
    models: dict[str, str] = {}
    for snapshot in snapshots.values():
        for rollout_id, evidence in snapshot.evidence.items():
            parts[rollout_id].append(evidence)
        models.update(snapshot.models)
    return {r: RolloutEvidence.merged(p) for r, p in parts.items()}, models


@pytest.fixture
def platform(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path
) -> Iterator[tuple[Settings, dict[str, Model]]]:
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, mlflow_uri=mlflow_uri,
        model_name=f"conc-{tag}-not-registered", topics=Topics(f"c{tag}"), partitions=2,
        reconcile_interval_s=0.5, session_timeout_ms=2_000, heartbeat_interval_ms=500,
        max_poll_interval_ms=5_000, snapshot_interval_s=1.0, admin_token=TOKEN,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    trained = {v: train_variant(v, dataset) for v in ("baseline", "good", "bad")}
    names = {key: f"conc-{tag}-{key}" for key in PLAN}
    versions = {
        key: [registry.register_sklearn(names[key], trained[v], dataset.X_train.head(2))
              for v in variants]
        for key, variants in PLAN.items()
    }  # fmt: skip
    ports = {key: free_port() for key in PLAN}
    with ExitStack() as stack, clean_mlflow_env():
        with ThreadPoolExecutor(2) as pool:  # both replicas at once
            started = [pool.submit(start_serving, settings, ports[k], names[k]) for k in SERVED]
        for future in started:  # stop whichever started, even if the other failed
            if future.exception() is None:
                stack.callback(future.result().stop)
        for future in started:
            future.result()
        for command in ("evaluate", "control"):
            stack.callback(start_worker(settings, command).stop)
        yield settings, {
            key: Model(key, names[key], versions[key][0], versions[key][-1],
                       f"http://127.0.0.1:{ports[key]}")
            for key in PLAN
        }  # fmt: skip


def drive(
    models: list[Model], done: threading.Event
) -> tuple[dict[str, TrafficStats], list[threading.Thread]]:
    """Traffic with late outcomes to each replica at once, until ``done``."""
    dataset = load_demo_dataset()
    rows = dataset.X_test.to_dict(orient="records")
    labels = [int(y) for y in dataset.y_test]
    stats: dict[str, TrafficStats] = {}

    def run(model: Model, seed: int) -> None:
        config = TrafficConfig(rate_per_s=RATES[model.key], concurrency=8, seed=seed)
        simulator = TrafficSimulator(model.url, rows, labels, config)
        stats[model.key] = asyncio.run(simulator.run(done.is_set, 270))

    threads = [threading.Thread(target=run, args=(m, i), daemon=True)
               for i, m in enumerate(models)]  # fmt: skip
    for thread in threads:
        thread.start()
    return stats, threads


def test_models_roll_out_independently(platform: tuple[Settings, dict[str, Model]]) -> None:
    settings, models = platform
    a, b, c = models["A"], models["B"], models["C"]
    assert settings.model_name not in {m.name for m in models.values()}  # told of none
    bootstrap = settings.resolved_kafka_bootstrap()
    registry = Registry(settings.resolved_mlflow_uri())
    store = RolloutStore(registry)

    rollout_ids = {}
    for model in (a, b):  # through each replica's admin API, as `modelcanary rollout start`
        started = AdminClient(model.url, TOKEN).call(
            "/admin/rollout/start",
            {"model": model.name, "version": model.challenger, "policy": two_step_policy()},
        )["rollout"]
        assert started["model"] == model.name and started["label"] == "running:0"
        assert started["champion_version"] == model.champion
        rollout_ids[model.key] = started["rollout_id"]
    # C has no replica: started from Python, as a training job would.
    quiet = Policy(steps=(Step(0.5, max_duration_s=6),), gates=default_policy().gates)
    rollout_ids["C"] = Controller(registry).start(c.name, c.challenger, quiet).rollout_id

    done = threading.Event()
    stats, threads = drive([a, b], done)
    final: dict[str, Rollout | None] = {}

    def all_ended() -> bool:
        for model in models.values():
            final[model.key] = store.load(model.name)
        return all(r is not None and r.state.terminal for r in final.values())

    try:
        wait_for(all_ended, 240, "every rollout to end")
    except AssertionError as exc:
        labels = {k: r.label if r else None for k, r in final.items()}
        raise AssertionError(f"{exc}: {labels}, traffic so far {stats}") from None
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
    states = {k: r.state.value for k, r in final.items() if r is not None}
    assert states == {"A": "promoted", "B": "rolled_back", "C": "rolled_back"}, final
    fa, fb = final["A"], final["B"]
    assert fa is not None and fb is not None
    assert max(fa.started_at, fb.started_at) < min(fa.updated_at, fb.updated_at), (
        "the rollouts of A and B did not overlap in time"
    )
    for key in SERVED:
        assert stats[key].failed == 0, stats[key].errors

    # -- decisions: each rollout's own, with its own model and versions -------------------
    decisions: list[DecisionEvent] = read_topic(
        bootstrap, settings.topics.decisions, decode_decision
    )
    by_rollout: dict[str, list[DecisionEvent]] = defaultdict(list)
    for decision in decisions:
        by_rollout[decision.rollout_id].append(decision)
    assert set(by_rollout) == set(rollout_ids.values()), set(by_rollout)
    for model in models.values():
        for decision in by_rollout[rollout_ids[model.key]]:
            assert decision.model == model.name
            assert decision.evidence["champion_version"] == model.champion
            assert decision.evidence["challenger_version"] == model.challenger
    moves = {
        key: [(d.action, d.from_state, d.to_state) for d in by_rollout[rid]
              if d.action is not Action.HOLD]
        for key, rid in rollout_ids.items()
    }  # fmt: skip
    assert moves["A"] == [
        (Action.ADVANCE, "running:0", "running:1"),
        (Action.PROMOTE, "running:1", "promoted"),
    ], moves["A"]
    assert moves["B"] == [(Action.ROLLBACK, "running:0", "rolled_back")], moves["B"]
    assert moves["C"] == [(Action.ROLLBACK, "running:0", "rolled_back")], moves["C"]
    (rollback,) = [d for d in by_rollout[rollout_ids["B"]] if d.action is Action.ROLLBACK]
    assert "accuracy" in rollback.reason
    gates = {g["gate"]: g for g in rollback.evidence["gates"]}
    assert gates["accuracy"]["verdict"] == "fail", gates["accuracy"]
    assert rollback.evidence["samples"]["steps_seen"] == [0]
    (timeout,) = [d for d in by_rollout[rollout_ids["C"]] if d.action is Action.ROLLBACK]
    assert "maximum" in timeout.reason, timeout.reason

    # -- audit runs: recorded under their own model, versions and rollout ----------------
    audit = AuditLog(registry)

    def terminal_recorded() -> bool:
        return all(
            any(r.data.tags.get("modelcanary.to_state") == states[k]
                and r.info.status == "FINISHED" for r in audit.runs(rid))
            for k, rid in rollout_ids.items()
        )  # fmt: skip

    wait_for(terminal_recorded, 30, "the terminal decisions to be recorded in MLflow")
    for model in models.values():
        runs = audit.runs(rollout_ids[model.key])
        for run in runs:
            tags = run.data.tags
            assert tags["modelcanary.model"] == model.name, tags
            assert tags["modelcanary.champion_version"] == model.champion, tags
            assert tags["modelcanary.challenger_version"] == model.challenger, tags
        recorded = {e.rollout_id for e in audit.history(model.name, include_holds=True)}
        assert recorded == {rollout_ids[model.key]}, recorded

    # -- routing: each replica served only its own versions and tagged its own rollout ----
    predictions = read_topic(bootstrap, settings.topics.predictions, decode_prediction)
    per_rollout: dict[str | None, set[str]] = defaultdict(set)
    challenger_events: Counter[str | None] = Counter()
    for event in predictions:
        model = a if event.model == a.name else b
        assert event.model == model.name, event.model
        assert event.version in model.versions, (event.model, event.version)
        assert event.rollout_id in (rollout_ids[model.key], None), (event.model, event.rollout_id)
        if event.event_id not in per_rollout[event.rollout_id]:
            challenger_events[event.rollout_id] += event.arm is Arm.CHALLENGER
        per_rollout[event.rollout_id].add(event.event_id)
    for key in SERVED:
        model = models[key]
        served = set(stats[key].by_version)
        assert model.challenger in served and served <= model.versions, (key, served)
        health = httpx.get(f"{model.url}/healthz", timeout=5).json()
        assert health["challenger_version"] is None, health
    assert httpx.get(f"{a.url}/healthz", timeout=5).json()["champion_version"] == a.challenger
    assert httpx.get(f"{b.url}/healthz", timeout=5).json()["champion_version"] == b.champion

    # -- evidence: each rollout's sample counts are exactly its own events ---------------
    expected = {key: len(per_rollout[rollout_ids[key]]) for key in SERVED}
    assert expected["A"] > 0 and expected["B"] > 0
    seen: dict[str, int] = {}

    def evidence_complete() -> bool:
        evidence, owners = merged_evidence(settings)
        assert set(evidence) == {rollout_ids[k] for k in SERVED}, set(evidence)
        for key in SERVED:
            rid = rollout_ids[key]
            assert owners[rid] == models[key].name, owners
            seen[key] = evidence[rid].predictions(Arm.CHAMPION) + evidence[rid].predictions(
                Arm.CHALLENGER
            )
            assert seen[key] <= expected[key], ("evidence holds foreign events", seen, expected)
        return seen == expected

    wait_for(evidence_complete, 30, f"the evaluator's counts {seen} to reach {expected}")
    for key in SERVED:  # what each decision was judged on was its own too
        for decision in by_rollout[rollout_ids[key]]:
            judged = decision.evidence["samples"]["predictions"]["challenger"]
            assert judged <= challenger_events[rollout_ids[key]], (decision.reason, judged)
            assert judged > 0 or decision.action is Action.HOLD, decision.reason
