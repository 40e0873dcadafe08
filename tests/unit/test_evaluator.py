"""The evaluator and the judge loop wired in memory: partitions, snapshots, merging."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelcanary.config import Topics
from modelcanary.errors import EventError
from modelcanary.evaluator import Evaluator
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, encode
from modelcanary.judging import JudgeLoop
from modelcanary.kafka_io import Record
from modelcanary.policy import default_policy
from modelcanary.rollout import new_rollout
from modelcanary.snapshot import MAGIC, decode_snapshot, encode_snapshot

TOPICS = Topics("t")
KEY = b"test-key"
POLICY = dataclasses.replace(
    default_policy(),
    steps=(dataclasses.replace(default_policy().steps[0], traffic_fraction=0.3),),
)


@dataclass
class ListPublisher:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def publish(self, topic: str, event: Any) -> None:
        self.events.append((topic, event))


def traffic(
    n: int, partitions: int = 4, seed: int = 1, challenger_accuracy: float = 0.75
) -> list[Record]:
    """Canary traffic, challenger worse, outcomes delayed; partition by request id."""
    rng = random.Random(seed)
    offsets = {(t, p): 0 for t in (TOPICS.predictions, TOPICS.outcomes) for p in range(partitions)}
    records: list[Record] = []
    late: list[tuple[int, Record]] = []
    for i in range(n):
        request_id = f"r{i}"
        partition = hash(request_id) % partitions
        arm = Arm.CHALLENGER if rng.random() < 0.3 else Arm.CHAMPION
        label = rng.randrange(2)
        correct = rng.random() < (challenger_accuracy if arm is Arm.CHALLENGER else 0.95)
        p = PredictionEvent(
            model="m",
            request_id=request_id,
            version="2" if arm is Arm.CHALLENGER else "1",
            arm=arm,
            mode=Mode.CANARY,
            served=True,
            prediction=label if correct else 1 - label,
            score=None,
            latency_ms=rng.uniform(1, 3),
            unit_id=None,
            rollout_id="ro",
            step=0,
            traffic_fraction=0.3,
        )
        o = OutcomeEvent(model="m", request_id=request_id, label=label)
        for topic, event, sink in ((TOPICS.predictions, p, records), (TOPICS.outcomes, o, None)):
            record = Record(
                topic, partition, offsets[(topic, partition)], request_id.encode(), encode(event)
            )
            offsets[(topic, partition)] += 1
            if sink is None:
                late.append((i + rng.randrange(50), record))
            else:
                sink.append(record)
        while late and late[0][0] <= i:
            records.append(late.pop(0)[1])
    records.extend(r for _, r in late)
    return records


def judged(evaluators: list[Evaluator]) -> tuple[str, dict]:
    rollout = dataclasses.replace(new_rollout("m", "1", "2", POLICY, now=0.0), rollout_id="ro")
    loop = JudgeLoop(TOPICS, ListPublisher(), lambda m: (rollout, POLICY), clock=lambda: 5.0)
    for evaluator in evaluators:
        for number in list(evaluator.partitions):
            loop.update(decode_snapshot(encode_snapshot(evaluator.snapshot(number), KEY), KEY))
    judgement = loop.judge_rollout(rollout, POLICY, now=60.0)
    gates = {g["gate"]: (g["verdict"], g["samples"]) for g in judgement.evidence["gates"]}
    return judgement.action.value, gates


def test_two_evaluators_decide_as_one() -> None:
    records = traffic(3_000)
    one = Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0)
    for r in records:
        one.handle(r)
    a, b = (
        Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0),
        Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0),
    )
    for r in records:
        (a if r.partition % 2 == 0 else b).handle(r)
    assert judged([one]) == judged([a, b])
    action, gates = judged([one])
    assert action == "rollback" and gates["accuracy"][0] == "fail"


def test_a_restored_partition_counts_nothing_twice() -> None:
    """Kill a worker after a snapshot, let another restore and replay: same evidence."""
    records = traffic(2_000, partitions=1)
    reference = Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0)
    for r in records:
        reference.handle(r)

    first = Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0)
    cut = len(records) // 2
    for r in records[:cut]:
        first.handle(r)
    snapshot = decode_snapshot(encode_snapshot(first.snapshot(0), KEY), KEY)
    for r in records[cut : cut + 300]:  # work done after the snapshot, lost with the worker
        first.handle(r)

    second = Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0)
    starts = second.assign(0, snapshot)
    for r in records:
        if r.offset >= (starts[r.topic] or 0):
            second.handle(r)
    assert second.counts["replayed"] > 0
    assert judged([reference]) == judged([second])


def test_poison_goes_to_the_dead_letter_topic_and_the_loop_goes_on() -> None:
    publisher = ListPublisher()
    evaluator = Evaluator(TOPICS, publisher)
    evaluator.handle(Record(TOPICS.predictions, 99, 0, b"k", b"{not json"))
    evaluator.handle(traffic(1)[0])
    [(topic, letter)] = publisher.events
    assert topic == TOPICS.deadletter and "not JSON" in letter.reason and letter.key == "k"
    assert evaluator.counts["predictions"] == 1


def test_snapshots_signed_with_another_key_are_refused() -> None:
    evaluator = Evaluator(TOPICS, ListPublisher())
    evaluator.handle(traffic(1)[0])
    raw = encode_snapshot(evaluator.snapshot(next(iter(evaluator.partitions))), KEY)
    with pytest.raises(EventError, match="signature"):
        decode_snapshot(raw, b"other")
    with pytest.raises(EventError):
        decode_snapshot(b"garbage", KEY)


def test_a_manual_gate_holds_until_approved() -> None:
    policy = dataclasses.replace(
        POLICY,
        steps=(dataclasses.replace(POLICY.steps[0], requires_approval=True), POLICY.steps[0]),
    )
    evaluator = Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0)
    for r in traffic(6_000, challenger_accuracy=0.95):
        evaluator.handle(r)
    rollout = dataclasses.replace(new_rollout("m", "1", "2", policy, now=0.0), rollout_id="ro")
    loop = JudgeLoop(TOPICS, ListPublisher(), lambda m: (rollout, policy))
    for number in list(evaluator.partitions):
        loop.update(evaluator.snapshot(number))
    held = loop.judge_rollout(rollout, policy, now=60.0)
    assert held.action.value == "hold" and "approval" in held.reason
    approved = dataclasses.replace(rollout, approved_step=0)
    assert loop.judge_rollout(approved, policy, now=60.0).action.value == "advance"


def test_tick_publishes_each_decision_once_with_report_evidence() -> None:
    evaluator = Evaluator(TOPICS, ListPublisher(), clock=lambda: 0.0)
    for r in traffic(3_000):
        evaluator.handle(r)
    rollout = dataclasses.replace(new_rollout("m", "1", "2", POLICY, now=0.0), rollout_id="ro")
    published = ListPublisher()
    loop = JudgeLoop(TOPICS, published, lambda m: (rollout, POLICY), clock=lambda: 60.0)
    for number in list(evaluator.partitions):
        loop.update(evaluator.snapshot(number))
    [decision] = loop.tick()
    assert loop.tick() == []
    assert decision.action.value == "rollback" and decision.from_state == "running:0"
    assert decision.evidence["challenger_version"] == "2"
    assert "latency" in decision.evidence
    assert published.events == [(TOPICS.decisions, decision)]


def test_a_signed_snapshot_that_cannot_be_unpickled_is_an_event_error() -> None:
    body = zlib.compress(pickle.dumps({"not": "a snapshot"})[:-3])  # truncated pickle
    raw = MAGIC + hmac.new(KEY, body, hashlib.sha256).digest() + body
    with pytest.raises(EventError, match="signed but cannot be read"):
        decode_snapshot(raw, KEY)


class Message:
    """Stands in for a confluent-kafka ``Message``: offset, key and value are methods."""

    def __init__(self, record: Record) -> None:
        self._record = record

    def offset(self) -> int:
        return self._record.offset

    def key(self) -> bytes | None:
        return self._record.key

    def value(self) -> bytes | None:
        return self._record.value


def test_messages_and_records_give_the_same_evidence() -> None:
    records = traffic(1_500, partitions=2)
    poison = Record(TOPICS.predictions, 0, 10_000, b"bad-key", b"{not json")
    records.append(poison)
    tombstone = Record(TOPICS.outcomes, 1, 10_000, b"gone", None)
    records.append(tombstone)
    records.extend(records[:40])  # re-delivered after a seek: ignored by both
    by_records, by_messages = ListPublisher(), ListPublisher()
    a = Evaluator(TOPICS, by_records, clock=lambda: 0.0)
    b = Evaluator(TOPICS, by_messages, clock=lambda: 0.0)
    for start in range(0, len(records), 97):
        chunk = records[start : start + 97]
        for tp in sorted({(r.topic, r.partition) for r in chunk}):
            batch = [r for r in chunk if (r.topic, r.partition) == tp]
            a.handle_batch(*tp, batch)
            b.handle_messages(*tp, [Message(r) for r in batch])
    assert a.counts == b.counts and a.counts["dead_letters"] == 2
    assert [(t, e.original_key, e.reason) for t, e in by_records.events] == [
        (t, e.original_key, e.reason) for t, e in by_messages.events
    ]
    assert {e.original_key for _, e in by_messages.events} == {"bad-key", "gone"}
    assert set(a.partitions) == set(b.partitions) == {0, 1}
    for number in a.partitions:
        assert pickle.dumps(a.snapshot(number).evidence) == pickle.dumps(
            b.snapshot(number).evidence
        )
    assert judged([a]) == judged([b])


def test_evidence_of_a_rollout_no_event_reached_for_the_ttl_is_forgotten() -> None:
    now = {"t": 0.0}
    evaluator = Evaluator(TOPICS, ListPublisher(), clock=lambda: now["t"], evidence_ttl_s=100.0)
    records = traffic(400, partitions=1)
    first, second = records[:200], records[200:]
    for r in first:
        evaluator.handle(r)
    state = evaluator.partitions[0]
    evaluator.expire()
    now["t"] = 99.0
    evaluator.expire()
    assert "ro" in state.evidence  # idle, but not for the TTL yet
    for r in second:  # new events: the idle clock starts again
        evaluator.handle(r)
    now["t"] = 150.0
    evaluator.expire()
    now["t"] = 249.0
    evaluator.expire()
    assert "ro" in state.evidence
    state.changed = False
    now["t"] = 250.0
    evaluator.expire()
    assert "ro" not in state.evidence and "ro" not in state.models and state.changed
    assert "ro" not in evaluator.snapshot(0).evidence
