"""The evaluator's own cost per record, in process: no Kafka, no consumer.

What is left on the evaluator worker's Python thread once a consumer has delivered the
records: decode, join, per-arm statistics (:class:`~modelcanary.evaluator.Evaluator`).
N canary prediction events (10% challenger, ``--features`` features each, a score, a
unit id out of 50 000) and their N outcomes are encoded up front, then handed to a new
evaluator in batches of ``--batch`` predictions followed by the same requests'
outcomes, as the worker would after a poll of both topics. ``us_per_record`` is the
wall time over the 2N records, best of ``--repeat`` runs (the least disturbed by other
load on the machine; every sample is in the JSON), with the evaluator worker's GC
settings (:func:`~modelcanary.evaluator_worker.tune_gc`); ``cpu_us_per_record`` is the
same in this process's CPU time, steadier on a machine shared with other work.

``--api messages`` goes through :meth:`~modelcanary.evaluator.Evaluator.handle_messages`
with stand-ins for confluent-kafka messages (offset, key and value are methods) instead
of :meth:`~modelcanary.evaluator.Evaluator.handle_batch`; ``--profile`` prints a
cProfile table of one more run.

Usage: python benchmarks/evaluator_inprocess.py --events 100000 --json out/evaluator_inprocess.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import time
from pathlib import Path
from typing import Any

from modelcanary.config import Topics
from modelcanary.evaluator import Evaluator
from modelcanary.evaluator_worker import tune_gc
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, encode
from modelcanary.kafka_io import Record

TOPICS = Topics("bench")


class NullPublisher:
    def publish(self, topic: str, event: Any) -> None:
        pass


class Message:
    """Stands in for a confluent-kafka ``Message``."""

    __slots__ = ("_key", "_offset", "_value")

    def __init__(self, record: Record) -> None:
        self._offset, self._key, self._value = record.offset, record.key, record.value

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def build(n: int, features: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """N prediction records and their N outcome records, partition 0 of each topic."""
    rng = random.Random(seed)
    names = [f"f{i}" for i in range(features)]
    predictions: list[Record] = []
    outcomes: list[Record] = []
    for i in range(n):
        request_id = f"req-{i}"
        arm = Arm.CHALLENGER if rng.random() < 0.1 else Arm.CHAMPION
        label = rng.randrange(2)
        p = PredictionEvent(
            model="m",
            request_id=request_id,
            version="2" if arm is Arm.CHALLENGER else "1",
            arm=arm,
            mode=Mode.CANARY,
            served=True,
            prediction=label,
            score=rng.random(),
            latency_ms=rng.uniform(0.5, 3),
            unit_id=f"u{rng.randrange(50_000)}",
            rollout_id="ro",
            step=0,
            traffic_fraction=0.1,
            features={k: rng.random() for k in names},
        )
        o = OutcomeEvent(model="m", request_id=request_id, label=label)
        key = request_id.encode()
        predictions.append(Record(TOPICS.predictions, 0, i, key, encode(p)))
        outcomes.append(Record(TOPICS.outcomes, 0, i, key, encode(o)))
    return predictions, outcomes


def run(predictions: list[Any], outcomes: list[Any], batch: int, api: str) -> Evaluator:
    evaluator = Evaluator(TOPICS, NullPublisher())
    handle = evaluator.handle_messages if api == "messages" else evaluator.handle_batch
    for start in range(0, len(predictions), batch):
        handle(TOPICS.predictions, 0, predictions[start : start + batch])
        handle(TOPICS.outcomes, 0, outcomes[start : start + batch])
    return evaluator


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="prediction events N")
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--api", choices=("batch", "messages"), default="batch")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--profile", action="store_true", help="print a cProfile table")
    args = parser.parse_args(argv)

    predictions, outcomes = build(args.events, args.features)
    if args.api == "messages":
        predictions = [Message(r) for r in predictions]  # type: ignore[misc]
        outcomes = [Message(r) for r in outcomes]  # type: ignore[misc]
    tune_gc()
    records = len(predictions) + len(outcomes)
    samples, cpu_samples = [], []
    for _ in range(args.repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        evaluator = run(predictions, outcomes, args.batch, args.api)
        cpu_samples.append((time.process_time() - cpu_started) / records * 1e6)
        samples.append((time.perf_counter() - started) / records * 1e6)
        assert evaluator.counts["predictions"] == args.events == evaluator.counts["outcomes"]
        del evaluator
    best = min(samples)
    result = {
        "records": records,
        "features": args.features,
        "batch": args.batch,
        "api": args.api,
        "us_per_record": round(best, 3),
        "records_per_s": round(1e6 / best),
        "samples_us_per_record": [round(s, 3) for s in samples],
        "cpu_us_per_record": round(min(cpu_samples), 3),
        "samples_cpu_us_per_record": [round(s, 3) for s in cpu_samples],
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, predictions, outcomes, args.batch, args.api)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return result


if __name__ == "__main__":
    main()
