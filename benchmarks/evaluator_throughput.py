"""Evaluator throughput against raw consumption of the same events.

Preloads N prediction events and their N outcomes into a real broker (the embedded
Tansu broker, started here on a free port; the preloading runs in a child process, so
it does not count in this process's memory), then measures in the same run, alternating
``--repeat`` times:

- ``raw_consume_per_s``: kafka-python reading those 2N records with ``assign()``, the
  values left untouched (kafka-python has parsed each record into an object already),
  with the same fetch sizes as the evaluator's consumer (:data:`KAFKA_PYTHON_FETCH`);
- ``raw_librdkafka_per_s``: librdkafka (confluent-kafka) reading them with the
  evaluator's consumer settings (:func:`~modelcanary.evaluator_worker.consumer_config`),
  each message's ``value()`` and ``offset()`` read: what the evaluator's consumer alone
  can deliver, for ``ratio_vs_librdkafka``;
- ``evaluator_per_s``: the evaluator worker's own loop over the same 2N records, from
  the same broker with the same consumer settings: each round is
  :func:`~modelcanary.evaluator_worker.poll_into` (consume, group by partition, decode,
  dead letters, join, per-arm statistics, the topics kept in step by
  :class:`~modelcanary.evaluator_worker.TopicAligner`), and every
  ``snapshot_interval_s`` each changed partition's snapshot is encoded as the worker
  would publish it (publishing itself is not timed);
- ``peak_rss_mb``: this process's peak resident memory (state is bounded by open joins,
  not by history: outcomes follow their predictions closely here, and the worker reads
  the two topics in step).

``ratio`` is ``evaluator_per_s / raw_consume_per_s`` (the kafka-python baseline);
``ratio_vs_librdkafka`` divides by ``raw_librdkafka_per_s`` instead, so that what comes
from the faster client and what from the evaluator is plain. All passes run in one
process with the evaluator worker's GC settings
(:func:`~modelcanary.evaluator_worker.tune_gc`). Rates are the best of the repeats (the
least disturbed by other load on the machine); every sample is in the JSON too.

Usage: python benchmarks/evaluator_throughput.py --events 200000 --json out/evaluator.json
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from modelcanary.config import Settings, Topics
from modelcanary.evaluator import Evaluator
from modelcanary.evaluator_worker import (
    CONSUME_BATCH,
    CONSUMER_FETCH,
    TopicAligner,
    consumer_config,
    poll_into,
    tune_gc,
)
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, encode
from modelcanary.infra.broker import start_broker
from modelcanary.infra.processes import free_port, stop_process
from modelcanary.infra.topics import ensure_topics
from modelcanary.snapshot import encode_snapshot

PARTITIONS = 4
#: kafka-python's settings for ``raw_consume_per_s``: those the evaluator's consumer had
#: while it was kafka-python's (larger fetches, up to 64 MiB, read within 7% as fast and
#: held more memory).
KAFKA_PYTHON_FETCH: dict[str, int] = {
    "max_poll_records": 5_000,
    "fetch_max_bytes": 1024 * 1024,
    "max_partition_fetch_bytes": 256 * 1024,
}


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
    producer.flush(600)
    producer.close()


def all_partitions(topics: Topics) -> list[tuple[str, int]]:
    return [(t, p) for t in (topics.predictions, topics.outcomes) for p in range(PARTITIONS)]


def raw_rate(bootstrap: str, topics: Topics, total: int) -> float:
    """kafka-python reading every partition of both topics from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False,
                             **KAFKA_PYTHON_FETCH)  # fmt: skip
    partitions = [TopicPartition(t, p) for t, p in all_partitions(topics)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen, started = 0, time.perf_counter()
    while seen < total:
        for messages in consumer.poll(timeout_ms=500).values():
            seen += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


def librdkafka_consumer(bootstrap: str, topics: Topics) -> Consumer:
    """A consumer of every partition of both topics, from the beginning, with the
    evaluator worker's settings (no group membership: ``group.id`` is required, unused).

    Connected, with the topics' metadata, before it is timed (as kafka-python's consumer
    is, by its constructor): assigned before it knows the partitions' leader, librdkafka
    retries the offset lookup only after 500 ms, a quarter of a 200,000-event pass. A
    worker in a group knows them when its partitions are assigned."""
    consumer = Consumer(consumer_config(bootstrap, **{"group.id": f"bench-{uuid.uuid4().hex}"}))
    consumer.list_topics(topics.predictions, timeout=30)
    consumer.list_topics(topics.outcomes, timeout=30)
    consumer.assign([RdTopicPartition(t, p, OFFSET_BEGINNING) for t, p in all_partitions(topics)])
    return consumer


def raw_librdkafka_rate(bootstrap: str, topics: Topics, total: int) -> float:
    """librdkafka reading the same, each message's value and offset read."""
    consumer = librdkafka_consumer(bootstrap, topics)
    seen, started = 0, time.perf_counter()
    while seen < total:
        for message in consumer.consume(CONSUME_BATCH, 0.5):
            if message.error() is None:
                message.value()
                message.offset()
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


def evaluator_rate(
    bootstrap: str, topics: Topics, total: int, snapshot_interval_s: float
) -> tuple[float, dict[str, Any]]:
    consumer = librdkafka_consumer(bootstrap, topics)
    aligner = TopicAligner(consumer, topics)
    evaluator = Evaluator(topics, NullPublisher())
    key = b"bench"
    seen, snapshots, max_open, started = 0, 0, 0, time.perf_counter()
    next_snapshot = time.monotonic() + snapshot_interval_s
    while seen < total:  # as EvaluatorWorker.run does
        seen += poll_into(consumer, evaluator, aligner, 0.5)
        max_open = max(max_open, evaluator.open_joins())
        if time.monotonic() >= next_snapshot:
            evaluator.expire()
            for number, state in evaluator.partitions.items():
                if state.changed:
                    encode_snapshot(evaluator.snapshot(number), key)
                    snapshots += 1
            next_snapshot = time.monotonic() + snapshot_interval_s
    elapsed = time.perf_counter() - started
    consumer.close()
    counters = [s.joiner.counters for s in evaluator.partitions.values()]
    return total / elapsed, {
        "joined": sum(c.joined for c in counters),
        "expired_without_outcome": sum(c.expired_without_outcome for c in counters),
        "open_joins_at_end": evaluator.open_joins(),
        "max_open_joins": max_open,
        "pauses": aligner.pauses,
        "snapshots_encoded": snapshots,
    }


def peak_mb() -> float:
    """Peak resident memory of this process so far (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Current resident memory of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="prediction events (N)")
    parser.add_argument("--features", type=int, default=10, help="features per prediction")
    parser.add_argument("--repeat", type=int, default=3, help="alternating passes of each")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    if args.events <= 0 or args.repeat <= 0:
        parser.error("--events and --repeat must be positive")
    tune_gc()
    snapshot_interval_s = Settings().snapshot_interval_s
    port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    broker = start_broker(port, logdir / "broker.log", cwd=logdir)
    bootstrap = f"127.0.0.1:{port}"
    raw: list[float] = []
    rdk: list[float] = []
    ours: list[float] = []
    result: dict[str, Any] = {}
    try:
        topics = Topics(f"bench{uuid.uuid4().hex[:6]}")
        ensure_topics(bootstrap, topics.all(), PARTITIONS)
        print(f"preloading {args.events} predictions and outcomes ...", file=sys.stderr)
        loader = multiprocessing.get_context("spawn").Process(
            target=preload, args=(bootstrap, topics, args.events, args.features)
        )
        loader.start()
        loader.join()
        if loader.exitcode != 0:
            raise SystemExit(f"preloading failed (exit code {loader.exitcode})")
        total = 2 * args.events
        print(f"preloaded (rss {rss_mb():.0f} MB)", file=sys.stderr)
        for i in range(args.repeat):
            raw.append(raw_rate(bootstrap, topics, total))
            print(f"[{i + 1}/{args.repeat}] raw consume: {raw[-1]:,.0f} records/s "
                  f"(rss {rss_mb():.0f} MB, peak {peak_mb():.0f} MB)", file=sys.stderr)  # fmt: skip
            rdk.append(raw_librdkafka_rate(bootstrap, topics, total))
            print(f"[{i + 1}/{args.repeat}] raw librdkafka: {rdk[-1]:,.0f} records/s "
                  f"(rss {rss_mb():.0f} MB, peak {peak_mb():.0f} MB)", file=sys.stderr)  # fmt: skip
            gc.collect()
            before = rss_mb()
            rate, stats = evaluator_rate(bootstrap, topics, total, snapshot_interval_s)
            ours.append(rate)
            print(f"[{i + 1}/{args.repeat}] evaluator:   {ours[-1]:,.0f} records/s "
                  f"(rss {rss_mb():.0f} MB, peak {peak_mb():.0f} MB)", file=sys.stderr)  # fmt: skip
            result = {**stats, "evaluator_state_rss_mb": round(rss_mb() - before, 1)}
    finally:
        stop_process(broker, timeout_s=2)
    best_raw, best_rdk, best_ours = max(raw), max(rdk), max(ours)
    result = {
        "events": args.events,
        "records": total,
        "features_per_prediction": args.features,
        "raw_consume_per_s": round(best_raw, 1),
        "evaluator_per_s": round(best_ours, 1),
        "ratio": round(best_ours / best_raw, 3),
        "raw_librdkafka_per_s": round(best_rdk, 1),
        "ratio_vs_librdkafka": round(best_ours / best_rdk, 3),
        "peak_rss_mb": round(peak_mb(), 1),
        "raw_samples_per_s": [round(r, 1) for r in raw],
        "raw_librdkafka_samples_per_s": [round(r, 1) for r in rdk],
        "evaluator_samples_per_s": [round(r, 1) for r in ours],
        "pair_ratios": [round(o / r, 3) for r, o in zip(raw, ours, strict=True)],
        "pair_ratios_vs_librdkafka": [round(o / r, 3) for r, o in zip(rdk, ours, strict=True)],
        "consumer": CONSUMER_FETCH,
        "kafka_python_fetch": KAFKA_PYTHON_FETCH,
        "snapshot_interval_s": snapshot_interval_s,
        **result,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
