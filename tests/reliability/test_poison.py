"""Poison records on every topic a modelcanary process reads, through a real broker.

The consumers are the real ones, in this process: an evaluator worker (predictions,
outcomes), the controller's decision loop (decisions) and the judge (evaluator-state).
Poison is written with a plain Kafka producer, as a buggy or hostile client would. Each
poison record must reach the dead-letter topic once, with its reason and its original
bytes, and every consumer must go on: valid events written after the poison are
evaluated, and a valid decision written after it is applied. (Nothing reads the
dead-letter topic itself, so no poison is written there.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaProducer

from modelcanary.config import Settings, Topics
from modelcanary.controller import Applied, Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.evaluator_worker import EvaluatorWorker
from modelcanary.events import (
    Action,
    Arm,
    DecisionEvent,
    Mode,
    OutcomeEvent,
    PredictionEvent,
    to_dict,
)
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import EventPublisher
from modelcanary.registry import Registry
from modelcanary.snapshot import MAGIC, Snapshot, encode_snapshot
from modelcanary.workers import JudgeThread, run_controller
from tests.reliability.stack import gated_policy, read_topic, restart_rollout, snapshot_evidence

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

VALID_REQUESTS = 30
EVIDENCE_ROLLOUT = "ro-poison"
MAX_RECORD_BYTES = 8 * 1024 * 1024


# -- poison ---------------------------------------------------------------------------
def _prediction_event(request_id: str) -> PredictionEvent:
    return PredictionEvent(
        model="m", request_id=request_id, version="1", arm=Arm.CHAMPION, mode=Mode.CANARY,
        served=True, prediction=1, latency_ms=2.0, rollout_id=EVIDENCE_ROLLOUT, step=0,
        traffic_fraction=0.3,
    )  # fmt: skip


def _prediction(request_id: str = "p-1") -> dict:
    return to_dict(_prediction_event(request_id))


def _outcome(request_id: str = "p-1") -> dict:
    return to_dict(OutcomeEvent(model="m", request_id=request_id, label=1, kpis={"revenue": 1.0}))


def _decision() -> dict:
    return to_dict(DecisionEvent(
        model="m", rollout_id="ro-x", action=Action.HOLD, from_state="running:0",
        to_state="running:0", traffic_fraction=0.1, reason="poison",
    ))  # fmt: skip


TEMPLATES: dict[str, Callable[[], dict]] = {
    "predictions": _prediction,
    "outcomes": _outcome,
    "decisions": _decision,
}


def _json(obj: dict, **literals: str) -> bytes:
    """JSON of ``obj`` where each ``name=literal`` puts a raw JSON literal in field ``name``."""
    marked = {**obj, **{name: f"@@{name}@@" for name in literals}}
    text = json.dumps(marked)
    for name, literal in literals.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text.encode()


def _without(obj: dict, name: str) -> dict:
    return {k: v for k, v in obj.items() if k != name}


#: (kind, topic) -> (poison bytes, what the dead letter's reason must say)
HANDLED: dict[tuple[str, str], tuple[bytes, str]] = {}
for _topic, _make in TEMPLATES.items():
    HANDLED[("not_json", _topic)] = (b"\x00\xff{this is not json", "not JSON")
    HANDLED[("not_an_object", _topic)] = (b"[1, 2, 3]", "expected a JSON object")
    HANDLED[("unknown_schema_version", _topic)] = (
        json.dumps({**_make(), "schema_version": 7}).encode(),
        "unknown schema_version 7",
    )
HANDLED[("missing_key", "predictions")] = (
    json.dumps(_without(_prediction(), "request_id")).encode(), "missing field 'request_id'"
)  # fmt: skip
HANDLED[("missing_key", "outcomes")] = (
    json.dumps(_without(_outcome(), "event_id")).encode(), "missing field 'event_id'"
)  # fmt: skip
HANDLED[("missing_key", "decisions")] = (
    json.dumps(_without(_decision(), "rollout_id")).encode(), "missing field 'rollout_id'"
)  # fmt: skip
HANDLED[("wrong_type", "predictions")] = (
    json.dumps({**_prediction(), "served": "yes"}).encode(), "field 'served' has type str"
)  # fmt: skip
HANDLED[("wrong_type", "outcomes")] = (
    json.dumps({**_outcome(), "kpis": {"revenue": "lots"}}).encode(), "kpi 'revenue'"
)  # fmt: skip
HANDLED[("wrong_type", "decisions")] = (
    json.dumps({**_decision(), "action": "explode"}).encode(), "field 'action'"
)  # fmt: skip
HANDLED[("number_beyond_float_range", "predictions")] = (
    _json(_prediction(), latency_ms="1e999"), "not a finite number"
)  # fmt: skip
HANDLED[("number_beyond_float_range", "outcomes")] = (
    _json(_outcome(), kpis='{"revenue": -1e999}'), "not a finite number"
)  # fmt: skip


def _crashing(kind: str, topic: str) -> bytes | None:
    """Poison of ``kind`` for ``topic`` (``None`` is a record without a value: a tombstone)."""
    if kind == "tombstone":
        return None
    if kind == "huge_integer":
        field_name = {
            "predictions": "latency_ms", "outcomes": "kpis", "decisions": "traffic_fraction",
        }  # fmt: skip
        literal = "1" + "0" * 400
        value = f'{{"revenue": {literal}}}' if topic == "outcomes" else literal
        return _json(TEMPLATES[topic](), **{field_name[topic]: value})
    if kind == "deep_nesting":  # 200 kB, well under the 1 MB event limit
        depth = 100_000
        return _json(TEMPLATES[topic](), label="[" * depth + "]" * depth)
    if kind == "oversized":  # over the 1 MB event limit
        return json.dumps({**TEMPLATES[topic](), "padding": "x" * 1_200_000}).encode()
    raise ValueError(kind)


# -- the rig: real consumers in this process ------------------------------------------
@dataclass
class Rig:
    settings: Settings
    model: str
    rollout_id: str
    worker: EvaluatorWorker
    threads: dict[str, threading.Thread]
    applied: list[Applied] = field(default_factory=list)
    judge: JudgeThread | None = None

    def poison(self, records: list[tuple[str, bytes | None]]) -> list[tuple[str, bytes, bytes]]:
        """Write raw records; returns (topic, key, value) of each."""
        producer = KafkaProducer(
            bootstrap_servers=self.settings.resolved_kafka_bootstrap(),
            max_request_size=MAX_RECORD_BYTES,
        )
        written = []
        try:
            for topic, value in records:
                key = f"poison-{uuid.uuid4().hex[:8]}".encode()
                producer.send(topic, key=key, value=value).get(timeout=30)
                written.append((topic, key, value if value is not None else b""))
        finally:
            producer.close()
        return written

    def valid_traffic_and_decision(self) -> DecisionEvent:
        """Valid events after the poison: requests to evaluate, and a pause to apply."""
        topics = self.settings.topics
        publisher = EventPublisher(self.settings.resolved_kafka_bootstrap())
        for i in range(VALID_REQUESTS):
            request_id = f"valid-{uuid.uuid4().hex[:8]}-{i}"
            publisher.publish(topics.predictions, _prediction_event(request_id))
            publisher.publish(topics.outcomes, OutcomeEvent(model="m", request_id=request_id,
                                                            label=1))  # fmt: skip
        rollout = Controller(Registry(self.settings.resolved_mlflow_uri())).store.load(self.model)
        assert rollout is not None
        pause = DecisionEvent(
            model=self.model, rollout_id=rollout.rollout_id, action=Action.PAUSE,
            from_state=rollout.label, to_state="paused", traffic_fraction=rollout.traffic_fraction,
            reason="operator pause after the poison",
        )  # fmt: skip
        publisher.publish(topics.decisions, pause)
        assert publisher.flush(30)
        publisher.close()
        return pause

    def alive(self) -> dict[str, bool]:
        return {name: thread.is_alive() for name, thread in self.threads.items()}

    def wait_goes_on(self, pause: DecisionEvent, timeout_s: float = 45.0) -> None:
        """Wait until the valid events are evaluated and the pause applied; fail at once if a
        consumer died."""
        deadline = time.monotonic() + timeout_s
        while True:
            alive = self.alive()
            assert all(alive.values()), f"a consumer died: {alive}"
            evaluated = snapshot_evidence(self.settings, EVIDENCE_ROLLOUT).requests_joined
            applied = any(a.decision.event_id == pause.event_id and a.applied for a in self.applied)
            judged = self.judge is None or (
                self.judge.loop.evidence(EVIDENCE_ROLLOUT).requests_joined >= VALID_REQUESTS
            )
            if evaluated >= VALID_REQUESTS and applied and judged:
                return
            assert time.monotonic() < deadline, (
                f"evaluated {evaluated}, pause applied {applied}, judged {judged}"
            )
            time.sleep(0.3)

    def dead_letters(self) -> list[dict]:
        time.sleep(1.0)  # the dead-letter publishers linger a few milliseconds
        records = read_topic(self.settings.resolved_kafka_bootstrap(),
                             self.settings.topics.deadletter)  # fmt: skip
        return [json.loads(r.value) for r in records]


@pytest.fixture(scope="module")
def model(mlflow_uri: str) -> str:
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    name = f"poison-{uuid.uuid4().hex[:8]}"
    sample = dataset.X_train.head(3)
    registry.register_sklearn(name, train_variant("baseline", dataset), sample)
    registry.register_sklearn(name, train_variant("good", dataset), sample)
    return name


@contextmanager
def rig(
    kafka_bootstrap: str, mlflow_uri: str, model: str, root: Path, with_judge: bool = False
) -> Iterator[Rig]:
    prefix = f"poison{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=root / prefix, kafka_bootstrap=kafka_bootstrap, mlflow_uri=mlflow_uri,
        model_name=model, topics=Topics(prefix), partitions=2, session_timeout_ms=1_000,
        heartbeat_interval_ms=300, max_poll_interval_ms=2_000, snapshot_interval_s=0.5,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(mlflow_uri)
    rollout_id = restart_rollout(Controller(registry), model, "2", gated_policy())
    worker = EvaluatorWorker(settings)
    stops = {name: threading.Event() for name in ("evaluator", "controller", "judge")}
    applied: list[Applied] = []
    threads = {
        "evaluator": threading.Thread(target=worker.run, args=(stops["evaluator"],)),
        "controller": threading.Thread(
            target=run_controller,
            args=(settings, stops["controller"]),
            kwargs={"retry_backoff_s": 0.2, "on_applied": applied.append, "judge": False},
        ),
    }
    judge = None
    judge_publisher = None
    if with_judge:
        judge_publisher = EventPublisher(kafka_bootstrap)
        judge = JudgeThread(settings, judge_publisher, stops["judge"], interval_s=0.5)
        threads["judge"] = judge
    for thread in threads.values():
        thread.daemon = True
        thread.start()
    try:
        yield Rig(settings, model, rollout_id, worker, threads, applied, judge)
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads.values():
            thread.join(15)
        if judge_publisher is not None:
            judge_publisher.close()


def _assert_dead_lettered(letters: list[dict], written: list[tuple[str, bytes, bytes]],
                          reasons: list[str]) -> None:  # fmt: skip
    for (topic, key, value), reason in zip(written, reasons, strict=True):
        mine = [d for d in letters if d.get("original_key") == key.decode()]
        assert len(mine) == 1, f"{len(mine)} dead letters for {topic} poison {value[:60]!r}"
        letter = mine[0]
        assert letter["source_topic"] == topic
        assert reason in letter["reason"], (reason, letter["reason"])
        assert base64.b64decode(letter["payload"]) == value
        assert letter["payload_truncated"] is False
        assert letter["payload_size"] == len(value)
        assert letter["payload_sha256"] == hashlib.sha256(value).hexdigest()


# -- malformed events: routed to the dead-letter topic, work goes on --------------------
@dataclass
class HandledRun:
    rig: Rig
    written: list[tuple[str, bytes, bytes]]
    reasons: list[str]
    letters: list[dict]
    state_poison: list[tuple[str, bytes, bytes]]


@pytest.fixture(scope="module")
def handled(
    kafka_bootstrap: str, mlflow_uri: str, model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HandledRun]:
    root = tmp_path_factory.mktemp("poison")
    with rig(kafka_bootstrap, mlflow_uri, model, root, with_judge=True) as r:
        topics = r.settings.topics
        cases = sorted(HANDLED.items())
        written = r.poison([(getattr(topics, topic), raw) for (_, topic), (raw, _) in cases])
        forged = Snapshot(partition=0, next_offsets={topics.predictions: 10**9}, low_offsets={})
        state_poison = r.poison([
            (topics.evaluator_state, b"not a snapshot"),
            (topics.evaluator_state, MAGIC + b"\x00" * 32 + b"unsigned body"),
            (topics.evaluator_state, encode_snapshot(forged, b"an attacker's key")),
        ])  # fmt: skip
        pause = r.valid_traffic_and_decision()
        r.wait_goes_on(pause)
        yield HandledRun(r, written, [reason for _, (_, reason) in cases], r.dead_letters(),
                         state_poison)  # fmt: skip


def test_malformed_events_on_every_topic_are_dead_lettered_with_the_reason(
    handled: HandledRun,
) -> None:
    _assert_dead_lettered(handled.letters, handled.written, handled.reasons)


def test_the_evaluator_the_judge_and_the_controller_go_on_after_poison(
    handled: HandledRun,
) -> None:
    r = handled.rig
    assert all(r.alive().values()), r.alive()
    joined = snapshot_evidence(r.settings, EVIDENCE_ROLLOUT).requests_joined
    assert joined == VALID_REQUESTS
    assert r.judge is not None
    assert r.judge.loop.evidence(EVIDENCE_ROLLOUT).requests_joined == VALID_REQUESTS
    rollout = Controller(Registry(r.settings.resolved_mlflow_uri())).store.load(r.model)
    assert rollout is not None and rollout.state.value == "paused"
    assert [d for d in r.applied if d.decision.reason == "poison"] == []


def test_a_forged_snapshot_is_not_merged(handled: HandledRun) -> None:
    r = handled.rig
    assert r.judge is not None
    assert all(
        s.next_offsets.get(r.settings.topics.predictions, 0) < 10**9
        for s in r.judge.loop.snapshots.values()
    )


def test_poison_snapshots_are_dead_lettered_with_the_reason(handled: HandledRun) -> None:
    reasons = ["not a modelcanary partition snapshot", "does not verify", "does not verify"]
    _assert_dead_lettered(handled.letters, handled.state_poison, reasons)
    # by the judge, with the record's position: its id is derived from it (a restarted judge
    # re-reads the topic and sends the same letters, which readers deduplicate by id)
    keys = {key.decode() for _, key, _ in handled.state_poison}
    mine = [d for d in handled.letters if d.get("original_key") in keys]
    assert all(d["source_offset"] is not None for d in mine), mine
    assert all(d["source_partition"] is not None for d in mine), mine


# -- poison that took a consumer down or lost its dead letter (each in a rig of its own) --
#: Each was a known gap, now fixed: a tombstone (TypeError/AttributeError out of decode_*),
#: an integer beyond float range (OverflowError), deep nesting (RecursionError), and a
#: record over the 1 MB event limit, whose dead letter (its payload base64-encoded) was too
#: large for the producer and dropped: a dead letter now carries at most the first
#: DEAD_LETTER_PAYLOAD_BYTES of the payload, with its size and hash.
CRASHING = ("tombstone", "huge_integer", "deep_nesting", "oversized")


@pytest.mark.parametrize("kind", CRASHING)
def test_poison_that_breaks_decoding_is_dead_lettered_and_work_goes_on(
    kind: str, kafka_bootstrap: str, mlflow_uri: str, model: str, tmp_path: Path
) -> None:
    with rig(kafka_bootstrap, mlflow_uri, model, tmp_path, with_judge=kind == "tombstone") as r:
        topics = r.settings.topics
        records = [(getattr(topics, t), _crashing(kind, t)) for t in TEMPLATES]
        if kind == "tombstone":
            records.append((topics.evaluator_state, None))
        written = r.poison(records)
        pause = r.valid_traffic_and_decision()
        r.wait_goes_on(pause)
        letters = r.dead_letters()
        event_poison = [w for w in written if w[0] != topics.evaluator_state]
        assert len(event_poison) == 3
        for topic, key, value in written:
            mine = [d for d in letters if d.get("original_key") == key.decode()]
            assert mine, (kind, topic)
            letter = mine[0]
            assert letter["payload_size"] == len(value)
            assert letter["payload_sha256"] == hashlib.sha256(value).hexdigest()
            kept = base64.b64decode(letter["payload"])
            assert letter["payload_truncated"] is (kind == "oversized"), (kind, topic)
            assert kept == value[: len(kept)] and (kind == "oversized" or kept == value)
            if kind == "oversized":
                assert "exceeds the 1000000-byte limit" in letter["reason"]
