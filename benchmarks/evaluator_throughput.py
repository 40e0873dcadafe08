"""Evaluator throughput against raw kafka-python consumption of the same events.

Preloads N prediction events and their N outcomes into a real broker (the embedded
Tansu broker, started here on a free port), then measures in the same run:

- ``raw_consume_per_s``: kafka-python reading those 2N records with ``assign()``;
- ``evaluator_per_s``: the evaluator reading the same records end to end (decode,
  join, per-arm statistics), as one worker does;
- ``peak_rss_mb``: the benchmark process's peak resident memory (state is bounded by
  open joins, not by history: outcomes follow their predictions closely here).

Usage: python benchmarks/evaluator_throughput.py --events 200000 --json out/evaluator.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from modelcanary.config import Topics
from modelcanary.evaluator import Evaluator
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, encode
from modelcanary.infra.broker import start_broker
from modelcanary.infra.processes import free_port, stop_process
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import Record

PARTITIONS = 4


class NullPublisher:
    def publish(self, topic: str, event: object) -> None:
        pass


def preload(bootstrap: str, topics: Topics, n: int, features: int) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=20, batch_size=256_000,
                             acks=1)  # fmt: skip
    rng = random.Random(0)
    names = [f"f{i}" for i in range(features)]
    pending: list[tuple[bytes, bytes]] = []
    for i in range(n):
        request_id = f"req-{i}"
        arm = Arm.CHALLENGER if rng.random() < 0.1 else Arm.CHAMPION
        label = rng.randrange(2)
        prediction = PredictionEvent(
            model="m", request_id=request_id, version="2" if arm is Arm.CHALLENGER else "1",
            arm=arm, mode=Mode.CANARY, served=True, prediction=label, score=rng.random(),
            latency_ms=rng.uniform(0.5, 3), unit_id=f"u{rng.randrange(50_000)}", rollout_id="ro",
            step=0, traffic_fraction=0.1,
            features={name: rng.random() for name in names} if features else None,
        )  # fmt: skip
        key = request_id.encode()
        producer.send(topics.predictions, key=key, value=encode(prediction))
        pending.append((key, encode(OutcomeEvent(model="m", request_id=request_id, label=label))))
        if len(pending) >= 500:  # outcomes arrive a little later than their predictions
            for k, v in pending:
                producer.send(topics.outcomes, key=k, value=v)
            pending.clear()
    for k, v in pending:
        producer.send(topics.outcomes, key=k, value=v)
    producer.flush(120)
    producer.close()


def consumer_for(bootstrap: str, topics: Topics) -> tuple[KafkaConsumer, list[TopicPartition]]:
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False,
                             max_poll_records=5_000, fetch_max_bytes=64 * 1024 * 1024)  # fmt: skip
    partitions = [TopicPartition(t, p) for t in (topics.predictions, topics.outcomes)
                  for p in range(PARTITIONS)]  # fmt: skip
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer, partitions


def raw_rate(bootstrap: str, topics: Topics, total: int) -> float:
    consumer, _ = consumer_for(bootstrap, topics)
    seen, started = 0, time.perf_counter()
    while seen < total:
        for messages in consumer.poll(timeout_ms=500).values():
            seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


def evaluator_rate(bootstrap: str, topics: Topics, total: int) -> tuple[float, Evaluator]:
    consumer, _ = consumer_for(bootstrap, topics)
    evaluator = Evaluator(topics, NullPublisher())
    seen, started = 0, time.perf_counter()
    while seen < total:
        for tp, messages in consumer.poll(timeout_ms=500).items():
            for m in messages:
                evaluator.handle(Record(tp.topic, tp.partition, m.offset, m.key, m.value))
            seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed, evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="prediction events (N)")
    parser.add_argument("--features", type=int, default=10, help="features per prediction")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    if args.events <= 0:
        parser.error("--events must be positive")
    port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    broker = start_broker(port, logdir / "broker.log", cwd=logdir)
    bootstrap = f"127.0.0.1:{port}"
    try:
        topics = Topics(f"bench{uuid.uuid4().hex[:6]}")
        ensure_topics(bootstrap, topics.all(), PARTITIONS)
        print(f"preloading {args.events} predictions and outcomes ...", file=sys.stderr)
        preload(bootstrap, topics, args.events, args.features)
        total = 2 * args.events
        raw = raw_rate(bootstrap, topics, total)
        print(f"raw consume: {raw:,.0f} records/s", file=sys.stderr)
        ours, evaluator = evaluator_rate(bootstrap, topics, total)
        print(f"evaluator:   {ours:,.0f} records/s", file=sys.stderr)
    finally:
        stop_process(broker, timeout_s=2)
    result = {
        "events": args.events,
        "records": total,
        "features_per_prediction": args.features,
        "raw_consume_per_s": round(raw, 1),
        "evaluator_per_s": round(ours, 1),
        "ratio": round(ours / raw, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "open_joins_at_end": evaluator.open_joins(),
        "joined": sum(s.joiner.counters.joined for s in evaluator.partitions.values()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
