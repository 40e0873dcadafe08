"""Catching up on a backlog, the evaluator reads both topics of a partition in step.

Kafka hands records out by bytes, and here a prediction (40 features) is ten times the
size of its outcome: read freely, the outcomes of a backlog run far ahead of their
predictions, and every one of them waits in memory as an open join. Read the way the
evaluator worker reads (its consumer settings, :func:`poll_into` and
:class:`TopicAligner`), open joins stay a fraction of that, every request is still
joined with its outcome exactly once, and reading never stalls: librdkafka drops what
it pre-fetched for a paused partition and fetches it again on resume.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from kafka import KafkaProducer

from modelcanary.config import Topics
from modelcanary.evaluator import Evaluator
from modelcanary.evaluator_worker import TopicAligner, consumer_config, poll_into
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, encode
from modelcanary.infra.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 60_000
PARTITIONS = 2
FEATURES = 40


class NullPublisher:
    def publish(self, topic: str, event: object) -> None:
        raise AssertionError(f"unexpected dead letter on {topic}: {event}")


def preload(bootstrap: str, topics: Topics) -> None:
    """Predictions, and each outcome shortly after its prediction (in event time)."""
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=20, batch_size=256_000)
    rng = random.Random(3)
    late: list[tuple[bytes, bytes]] = []
    for i in range(REQUESTS):
        request_id = f"r{i}"
        prediction = PredictionEvent(
            model="m", request_id=request_id, version="1", arm=Arm.CHAMPION, mode=Mode.CANARY,
            served=True, prediction=1, latency_ms=1.0, rollout_id="ro", step=0,
            features={f"f{k}": rng.random() for k in range(FEATURES)},
        )  # fmt: skip
        producer.send(topics.predictions, key=request_id.encode(), value=encode(prediction))
        outcome = OutcomeEvent(model="m", request_id=request_id, label=1)
        late.append((request_id.encode(), encode(outcome)))
        if len(late) >= 200:
            for key, value in late:
                producer.send(topics.outcomes, key=key, value=value)
            late.clear()
    for key, value in late:
        producer.send(topics.outcomes, key=key, value=value)
    producer.flush(120)
    producer.close()


def read_all(bootstrap: str, topics: Topics, aligned: bool) -> tuple[Evaluator, int, int]:
    """Read every record as the worker does; returns the evaluator, the largest number of
    open joins seen after a poll, and how many times the aligner paused a partition."""
    consumer = Consumer(consumer_config(bootstrap, **{"group.id": f"align-{uuid.uuid4().hex}"}))
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                     for t in (topics.predictions, topics.outcomes)
                     for p in range(PARTITIONS)])  # fmt: skip
    aligner = TopicAligner(consumer, topics)
    evaluator = Evaluator(topics, NullPublisher())
    seen, most_open, deadline = 0, 0, time.monotonic() + 120
    try:
        while seen < 2 * REQUESTS:
            assert time.monotonic() < deadline, f"reading stalled after {seen} records"
            seen += poll_into(consumer, evaluator, aligner if aligned else None, 0.5)
            most_open = max(most_open, evaluator.open_joins())
    finally:
        consumer.close()
    return evaluator, most_open, aligner.pauses


def test_a_backlog_is_read_in_step_and_every_request_joins(kafka_bootstrap: str) -> None:
    topics = Topics(f"align{uuid.uuid4().hex[:6]}")
    ensure_topics(kafka_bootstrap, topics.all(), PARTITIONS)
    preload(kafka_bootstrap, topics)

    free, free_open, _ = read_all(kafka_bootstrap, topics, aligned=False)
    evaluator, aligned_open, pauses = read_all(kafka_bootstrap, topics, aligned=True)

    for ev in (free, evaluator):
        counters = [state.joiner.counters for state in ev.partitions.values()]
        assert sum(c.joined for c in counters) == REQUESTS
        assert ev.counts["predictions"] == ev.counts["outcomes"] == REQUESTS
        assert ev.counts["duplicates"] == ev.counts["replayed"] == 0
        assert ev.open_joins() == 0
        assert ev.merged_evidence()["ro"].requests_joined == REQUESTS
    assert pauses > 0
    assert free_open > REQUESTS / 4, "the backlog did not make the outcomes run ahead"
    assert aligned_open < free_open / 2, (aligned_open, free_open)
