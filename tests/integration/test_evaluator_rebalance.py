"""Workers joining and leaving the evaluator group mid-stream lose nothing and count
nothing twice.

Two real :class:`~modelcanary.evaluator_worker.EvaluatorWorker` instances (librdkafka
consumers in one group, here in threads of this process) on a real broker, while events
stream in: the first takes every partition; the second joins (a rebalance: the first
publishes its final snapshots, each member restores its share from them) and later
leaves gracefully (another rebalance). Every prediction and outcome must be counted by
exactly one of them, and the evidence in the snapshots must equal that of one evaluator
reading every record once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from modelcanary.config import Settings, Topics
from modelcanary.evaluator import Evaluator
from modelcanary.evaluator_worker import (
    EvaluatorWorker,
    consumer_config,
    poll_into,
    read_latest_snapshots,
)
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.infra.topics import ensure_topics
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import EventPublisher
from tests.integration.canary_events import canary_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 6_000
RECORDS = 2 * REQUESTS
PARTITIONS = 4
ROLLOUT = "ro-rebalance"
CHUNK = 400
CHUNK_PAUSE_S = 0.3


def stream(seed: int = 5) -> list[PredictionEvent | OutcomeEvent]:
    rng = random.Random(seed)
    out = canary_events(rng, REQUESTS, ROLLOUT)
    # Locally shuffled: outcomes often before their predictions, never far from them.
    for start in range(0, len(out), 200):
        window = out[start : start + 200]
        rng.shuffle(window)
        out[start : start + 200] = window
    return out


def produce(settings: Settings, events: list, pause_s: float = 0.0) -> None:
    publisher = EventPublisher(settings.resolved_kafka_bootstrap())
    try:
        for start in range(0, len(events), CHUNK):
            for event in events[start : start + CHUNK]:
                topic = (settings.topics.predictions if isinstance(event, PredictionEvent)
                         else settings.topics.outcomes)  # fmt: skip
                publisher.publish(topic, event)
            assert publisher.flush(30)
            time.sleep(pause_s)
        assert publisher.failed == 0 and publisher.dropped == 0
    finally:
        publisher.close()


class Running:
    """An evaluator worker running in a thread until :meth:`stop`."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.worker = EvaluatorWorker(settings, worker_id=name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.worker.run, args=(self._stop,), name=name)
        self._thread.start()

    @property
    def counted(self) -> int:
        counts = self.worker.evaluator.counts
        return counts["predictions"] + counts["outcomes"]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), f"{self._thread.name} did not stop"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def snapshotted(settings: Settings) -> tuple[int, RolloutEvidence]:
    """Records covered by the latest snapshots, and the evidence merged over them."""
    snapshots = read_latest_snapshots(
        settings.resolved_kafka_bootstrap(), settings.topics.evaluator_state,
        settings.state_key.encode(),
    )  # fmt: skip
    records = sum(sum(s.next_offsets.values()) for s in snapshots.values())
    parts = [s.evidence[ROLLOUT] for s in snapshots.values() if ROLLOUT in s.evidence]
    return records, RolloutEvidence.merged(parts)


class NoDeadLetters:
    def publish(self, topic: str, event: object) -> None:
        raise AssertionError(f"unexpected dead letter on {topic}: {event}")


def read_once(settings: Settings) -> RolloutEvidence:
    """Every record read once, by one evaluator, from the beginning."""
    bootstrap = settings.resolved_kafka_bootstrap()
    topics = settings.topics
    consumer = Consumer(consumer_config(bootstrap, **{"group.id": f"ref-{uuid.uuid4().hex}"}))
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                     for t in (topics.predictions, topics.outcomes)
                     for p in range(PARTITIONS)])  # fmt: skip
    evaluator = Evaluator(topics, NoDeadLetters())
    seen, deadline = 0, time.monotonic() + 60
    try:
        while seen < RECORDS:
            assert time.monotonic() < deadline, f"read {seen} of {RECORDS} records"
            seen += poll_into(consumer, evaluator, None, 0.5)
    finally:
        consumer.close()
    evaluator.expire()
    return evaluator.merged_evidence()[ROLLOUT]


def accuracy(evidence: RolloutEvidence) -> dict[str, object]:
    strata = evidence.arm_strata("accuracy", Mode.CANARY)[0]
    return {
        "counts": [evidence.arm_count("accuracy", arm) for arm in Arm],
        "strata": [(c.n, round(c.mean, 9)) for c in strata],
    }


def test_workers_joining_and_leaving_lose_nothing_and_count_nothing_twice(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelcanary.evaluator_worker")
    prefix = f"rebal{uuid.uuid4().hex[:6]}"
    settings = Settings(
        data_dir=tmp_path / prefix, kafka_bootstrap=kafka_bootstrap,
        mlflow_uri="http://127.0.0.1:9", topics=Topics(prefix), partitions=PARTITIONS,
        session_timeout_ms=1_000, heartbeat_interval_ms=300, max_poll_interval_ms=2_000,
        snapshot_interval_s=0.5,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), PARTITIONS)
    events = stream()
    head = len(events) // 6
    produce(settings, events[:head])

    first = Running(settings, "first")
    second: Running | None = None
    streaming = threading.Thread(target=produce, args=(settings, events[head:], CHUNK_PAUSE_S))
    try:
        wait_until(lambda: first.counted >= head, 60, "the first worker to read the head")
        streaming.start()
        second = Running(settings, "second")
        wait_until(lambda: second.counted > 0, 60, "the second worker to take partitions")
        assert streaming.is_alive(), "the stream ended before the second worker joined"
        time.sleep(1.0)
        second.stop()  # leaves the group: the first takes its partitions back
        assert streaming.is_alive(), "the stream ended before the second worker left"
        wait_until(lambda: len(first.worker.evaluator.partitions) == PARTITIONS, 60,
                   "the first worker to own every partition again")  # fmt: skip
        streaming.join(60)
        wait_until(lambda: snapshotted(settings)[0] == RECORDS, 60, "every record snapshotted")
    finally:
        streaming.join(60) if streaming.is_alive() else None
        first.stop()
        if second is not None and second._thread.is_alive():
            second.stop()

    assert second is not None
    counts = [w.worker.evaluator.counts for w in (first, second)]
    # Each record counted by exactly one worker: the other only replayed it.
    assert sum(c["predictions"] for c in counts) == REQUESTS, counts
    assert sum(c["outcomes"] for c in counts) == REQUESTS, counts
    assert all(c["duplicates"] == 0 for c in counts), counts
    assert all(c["predictions"] + c["outcomes"] > 0 for c in counts), counts
    restored = [r.getMessage() for r in caplog.records if "restored from snapshots: [0" in
                r.getMessage() or "restored from snapshots: [2" in r.getMessage()]  # fmt: skip
    assert any(m.startswith("second took") for m in restored), restored
    assert any(m.startswith("first took partitions [0, 1, 2, 3]") for m in restored), restored

    records, evidence = snapshotted(settings)
    expected = read_once(settings)
    assert records == RECORDS
    assert evidence.requests_joined == expected.requests_joined == REQUESTS
    assert evidence.summary() == expected.summary()
    assert accuracy(evidence) == accuracy(expected)
