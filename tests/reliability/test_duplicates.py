"""Duplicate and out-of-order events, through a real broker, into the real evaluator worker.

The same requests are evaluated twice: once as a clean stream (each prediction, then its
outcome, once) and once as a dirty one — shuffled so that many outcomes come before their
prediction, with a quarter of the events delivered a second time (same ``event_id``: a
producer retry or a spool replay) and a tenth of the requests reported twice by the
application (a retried ``/feedback``: a new event with the same label). The evidence of
the dirty stream must equal that of the clean one.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelcanary.config import Settings, Topics
from modelcanary.evaluator_worker import EvaluatorWorker
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.infra.topics import ensure_topics
from modelcanary.join import JoinCounters
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import EventPublisher

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

REQUESTS = 800
ROLLOUT = "ro-dup"
Event = PredictionEvent | OutcomeEvent


def requests(seed: int = 5) -> list[tuple[PredictionEvent, OutcomeEvent]]:
    rng = random.Random(seed)
    out = []
    for i in range(REQUESTS):
        arm = Arm.CHALLENGER if rng.random() < 0.3 else Arm.CHAMPION
        label = rng.randrange(2)
        correct = rng.random() < (0.9 if arm is Arm.CHALLENGER else 0.93)
        prediction = PredictionEvent(
            model="m", request_id=f"dup-{i}", version="2" if arm is Arm.CHALLENGER else "1",
            arm=arm, mode=Mode.CANARY, served=True, prediction=label if correct else 1 - label,
            latency_ms=rng.uniform(1, 5), unit_id=f"u{i % 97}", rollout_id=ROLLOUT, step=0,
            traffic_fraction=0.3, error=None if rng.random() > 0.02 else "boom",
        )  # fmt: skip
        out.append((prediction, OutcomeEvent(model="m", request_id=f"dup-{i}", label=label)))
    return out


def clean_stream(pairs: list[tuple[PredictionEvent, OutcomeEvent]]) -> list[Event]:
    return [event for pair in pairs for event in pair]


def dirty_stream(pairs: list[tuple[PredictionEvent, OutcomeEvent]], seed: int = 9) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = clean_stream(pairs)
    for _, outcome in pairs:
        if rng.random() < 0.1:  # the application reported the outcome twice
            events.append(OutcomeEvent(model="m", request_id=outcome.request_id,
                                       label=outcome.label))  # fmt: skip
    rng.shuffle(events)
    for index in rng.sample(range(len(events)), len(events) // 4):
        later = rng.randrange(index + 1, len(events) + 1)
        events.insert(later, events[index])  # redelivered: the very same event
    return events


@dataclass(frozen=True)
class Evaluated:
    evidence: RolloutEvidence
    joins: JoinCounters


def evaluate(kafka_bootstrap: str, root: Path, events: list[Event]) -> Evaluated:
    """Publish ``events`` in order, then run an evaluator worker until it has read them all."""
    prefix = f"dup{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=root / prefix, kafka_bootstrap=kafka_bootstrap, mlflow_uri="http://127.0.0.1:9",
        topics=Topics(prefix), partitions=2, session_timeout_ms=1_000,
        heartbeat_interval_ms=300, max_poll_interval_ms=2_000,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    publisher = EventPublisher(kafka_bootstrap)
    for event in events:
        topic = settings.topics.predictions if isinstance(event, PredictionEvent) else (
            settings.topics.outcomes
        )  # fmt: skip
        publisher.publish(topic, event)
    assert publisher.flush(30) and publisher.failed == 0
    publisher.close()
    worker = EvaluatorWorker(settings)
    try:
        deadline = time.monotonic() + 60
        while _read(worker) < len(events):
            assert time.monotonic() < deadline, f"read {_read(worker)} of {len(events)} records"
            worker.poll_once()
        evaluator = worker.evaluator
        evaluator.expire()
        joins = JoinCounters()
        for state in evaluator.partitions.values():
            for name, value in vars(state.joiner.counters).items():
                setattr(joins, name, getattr(joins, name) + value)
        return Evaluated(evaluator.merged_evidence()[ROLLOUT], joins)
    finally:
        worker.close()


def _read(worker: EvaluatorWorker) -> int:
    return sum(sum(s.next_offsets.values()) for s in worker.evaluator.partitions.values())


@pytest.fixture(scope="module")
def runs(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    root = tmp_path_factory.mktemp("duplicates")
    pairs = requests()
    yield (
        evaluate(kafka_bootstrap, root, clean_stream(pairs)),
        evaluate(kafka_bootstrap, root, dirty_stream(pairs)),
    )


def test_reordered_and_repeated_events_join_each_request_once(runs: tuple) -> None:
    clean, dirty = runs
    assert clean.evidence.requests_joined == REQUESTS
    assert dirty.evidence.requests_joined == REQUESTS
    assert dirty.evidence.requests_without_outcome == 0
    assert dirty.joins.duplicates > REQUESTS // 4, "the dirty stream was not dirty"
    for arm in Arm:
        assert dirty.evidence.arm_count("accuracy", arm) == clean.evidence.arm_count(
            "accuracy", arm
        )
    strata = {
        name: [(c.n, c.mean) for c in ev.arm_strata("accuracy", Mode.CANARY)[0]]
        for name, ev in (("clean", clean.evidence), ("dirty", dirty.evidence))
    }
    assert strata["dirty"] == strata["clean"]


def test_redelivered_prediction_events_are_counted_once(runs: tuple) -> None:
    clean, dirty = runs
    assert dirty.evidence.summary() == clean.evidence.summary()
    assert dirty.evidence.predictions(Arm.CHALLENGER) == clean.evidence.predictions(Arm.CHALLENGER)
