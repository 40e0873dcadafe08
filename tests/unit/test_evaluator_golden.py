"""Golden file: the evidence the evaluator accumulates from one fixed stream, pinned.

The evaluator's hot path (decode, join, per-arm statistics) is optimised by hand; this
pins what it computes so that no optimisation can change a statistic silently. A seeded
stream exercising every branch (canary and shadow, both arms, failed challengers and
their fallbacks, features, scores, regression and text labels, KPIs, unit ids, two
rollouts, events without rollout or step, duplicates, poison, a tombstone, a topic the
evaluator does not read, outcomes before and long after their predictions, joins that
expire, a worker that dies after a snapshot and a successor that restores and replays)
goes through the evaluator in batches; everything the judge reads is dumped as JSON
and compared with ``golden/evaluator_evidence.json``, floats exactly.

Regenerate (only for an intended change of the statistics, and say why in the commit):
``python tests/unit/test_evaluator_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelcanary.config import Topics
from modelcanary.evaluator import Evaluator
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent, encode
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import Record
from modelcanary.snapshot import decode_snapshot, encode_snapshot

GOLDEN = Path(__file__).parent / "golden" / "evaluator_evidence.json"
TOPICS = Topics("g")
KEY = b"golden-key"
PARTITIONS = 2
BATCH = 37
TTL_S = 40.0
START = 1_780_000_000.0  # event time of the first request (epoch seconds)


@dataclass
class ListPublisher:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def publish(self, topic: str, event: Any) -> None:
        self.events.append((topic, event))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ts(seconds: float) -> str:
    when = datetime.fromtimestamp(seconds, UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _answer(rng: random.Random, kind: str, label: Any, good: float) -> tuple[Any, Any]:
    """(prediction, score) of an arm that is right with probability ``good``."""
    if kind == "binary":
        score = rng.random() * 0.5 + (0.5 if label == 1 else 0.0)
        if rng.random() > good:
            score = 1.0 - score
        return int(score >= 0.5), score
    if kind == "regression":
        return label + rng.gauss(0.0, 2.0 - good), None
    if kind == "text":
        return (label if rng.random() < good else "dog"), None
    return bool(label) if rng.random() < good else not label, None  # bool labels


def _prediction(
    rng: random.Random,
    request: tuple[int, float, str, Any],
    common: dict[str, Any],
    arm: Arm,
    served: bool,
    error: str | None,
    delay: float,
) -> PredictionEvent:
    i, t, kind, label = request
    pred, score = _answer(rng, kind, label, 0.9 if arm is Arm.CHAMPION else 0.8)
    return PredictionEvent(
        version="2" if arm is Arm.CHALLENGER else "1",
        arm=arm,
        served=served,
        prediction=None if error else pred,
        score=None if error else score,
        latency_ms=rng.choice([0.0, 0.0004, rng.lognormvariate(1.0, 0.8)]),
        error=error,
        event_id=f"p-{i}-{arm.value}",
        ts=_ts(t + delay) if rng.random() > 0.003 else "not a time",
        **common,
    )


def stream(n: int = 3_400, seed: int = 7) -> list[tuple[int, str, bytes | None, int]]:
    """``(partition, topic, value, arrival)`` in arrival order (partition by CRC32)."""
    rng = random.Random(seed)
    out: list[tuple[int, str, bytes | None, int]] = []

    def emit(event: Any, arrival: int) -> None:
        partition = zlib.crc32(event.request_id.encode()) % PARTITIONS
        topic = TOPICS.predictions if isinstance(event, PredictionEvent) else TOPICS.outcomes
        out.append((partition, topic, encode(event), arrival))

    for i in range(n):
        request_id = f"req-{i}"
        t = START + i * 0.37
        mode = Mode.SHADOW if rng.random() < 0.25 else Mode.CANARY
        step = 0 if i < n // 2 else 1
        fraction = 0.2 if step == 0 else 0.5
        rollout_id: str | None = "ro" if rng.random() < 0.9 else "ro-b"
        if rng.random() < 0.02:
            rollout_id = None
        kind = rng.choice(["binary"] * 6 + ["regression", "text", "bool"])
        label: Any = {
            "binary": rng.randrange(2),
            "regression": round(rng.uniform(0, 100), 3),
            "text": rng.choice(["cat", "dog"]),
            "bool": rng.random() < 0.5,
        }[kind]
        unit_id = f"u{rng.randrange(400)}" if rng.random() < 0.7 else None
        features = (
            {"x": round(rng.gauss(0, 1), 6), "n": rng.randrange(10), "c": rng.choice("abc")}
            if rng.random() < 0.8
            else None
        )
        request = (i, t, kind, label)
        common = {
            "model": "m",
            "mode": mode,
            "request_id": request_id,
            "unit_id": unit_id,
            "rollout_id": rollout_id,
            "step": step if rng.random() < 0.97 else None,
            "traffic_fraction": fraction if rng.random() < 0.97 else None,
            "features": features,
        }

        events: list[PredictionEvent] = []
        failed = rng.random() < 0.06
        if mode is Mode.CANARY:
            if rng.random() < fraction:
                events.append(
                    _prediction(
                        rng,
                        request,
                        common,
                        Arm.CHALLENGER,
                        not failed,
                        "boom" if failed else None,
                        0,
                    )
                )
                if failed:
                    events.append(_prediction(rng, request, common, Arm.CHAMPION, True, None, 0.01))
            else:
                events.append(
                    _prediction(
                        rng, request, common, Arm.CHAMPION, True, "boom" if failed else None, 0
                    )
                )
        else:
            events.append(
                _prediction(rng, request, common, Arm.CHAMPION, True, "boom" if failed else None, 0)
            )
            if not failed:
                events.append(_prediction(rng, request, common, Arm.CHALLENGER, False, None, 0.02))
        arrival = i
        for event in events:
            emit(event, arrival + rng.randrange(3))
        if rng.random() < 0.03:  # a duplicated prediction
            emit(events[0], arrival + rng.randrange(30))
        if rng.random() < 0.9:  # the outcome: usually soon, sometimes before, sometimes late
            kpis = {"revenue": round(rng.uniform(0, 50), 2)} if rng.random() < 0.5 else {}
            if rng.random() < 0.1:
                kpis["clicks"] = rng.randrange(5)  # type: ignore[assignment]
            outcome = OutcomeEvent(
                model="m",
                request_id=request_id,
                label=label,
                kpis=kpis,  # type: ignore[arg-type]
                event_id=f"o-{i}",
                ts=_ts(t + 1.0),
            )
            lag = rng.choice([-2, 0, 1, 3, 8, 20]) if rng.random() < 0.97 else 400
            emit(outcome, arrival + lag)
            if rng.random() < 0.03:  # a duplicated outcome
                emit(outcome, arrival + lag + rng.randrange(5))
        if rng.random() < 0.01:  # an outcome whose prediction never comes
            orphan = OutcomeEvent(model="m", request_id=f"orphan-{i}", label=1, event_id=f"x{i}")
            emit(orphan, arrival)
    poison = [
        b"{not json",
        b'{"schema_version": 2}',
        b"[1, 2]",
        json.dumps({"schema_version": 1, "event_id": "e", "ts": "t", "model": "m"}).encode(),
    ]
    for k, raw in enumerate(poison):  # before and after the snapshot
        out.append((k % PARTITIONS, TOPICS.predictions, raw, 100 + 700 * k))
    out.append((1, TOPICS.outcomes, None, 500))  # a tombstone
    out.append((0, TOPICS.outcomes, b'{"schema_version": 1, "kpis": []}', 2_000))
    out.append((0, TOPICS.decisions, b"{}", 2_400))  # a topic the evaluator does not read
    out.sort(key=lambda row: row[3])
    return out


def records_of(rows: list[tuple[int, str, bytes | None, int]]) -> list[tuple[int, Record]]:
    """Number each topic partition's records: ``(arrival, Record)``."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for partition, topic, value, arrival in rows:
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        key = f"k{offset}".encode() if value is not None else b"tombstone"
        out.append((arrival, Record(topic, partition, offset, key, value)))
    return out


def feed(evaluator: Evaluator, clock: Clock, records: list[tuple[int, Record]]) -> None:
    """In batches of one topic partition, the clock following the records' arrival."""
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        clock.now = float(chunk[-1][0])
        groups: dict[tuple[str, int], list[Record]] = {}
        for _, record in chunk:
            groups.setdefault((record.topic, record.partition), []).append(record)
        for (topic, partition), batch in groups.items():
            evaluator.handle_batch(topic, partition, batch)
        if start % (BATCH * 20) == 0:
            evaluator.expire()


def run() -> dict[str, Any]:
    """The stream through a worker that dies after a snapshot and its successor."""
    records = records_of(stream())
    cut = len(records) // 2
    first_clock, first_letters = Clock(), ListPublisher()
    first = Evaluator(TOPICS, first_letters, join_ttl_s=TTL_S, clock=first_clock)
    feed(first, first_clock, records[:cut])
    snapshots = {
        number: decode_snapshot(encode_snapshot(first.snapshot(number), KEY), KEY)
        for number in sorted(first.partitions)
    }
    feed(first, first_clock, records[cut : cut + 400])  # lost with the worker

    clock, letters = Clock(), ListPublisher()
    second = Evaluator(TOPICS, letters, join_ttl_s=TTL_S, clock=clock)
    starts = {number: second.assign(number, s) for number, s in snapshots.items()}
    clock.now = first_clock.now
    replay = [
        (arrival, r)
        for arrival, r in records
        if r.partition not in starts or r.offset >= (starts[r.partition].get(r.topic) or 0)
    ]
    feed(second, clock, replay)
    clock.now += 10 * TTL_S
    second.expire()
    return {
        "first": {
            "counts": first.counts,
            "dead_letters": [_letter(e) for _, e in first_letters.events],
            "snapshots": {str(n): _snapshot(s) for n, s in snapshots.items()},
        },
        "second": {
            "counts": second.counts,
            "dead_letters": [_letter(e) for _, e in letters.events],
            "open_joins": second.open_joins(),
            "partitions": {
                str(n): {
                    "next_offsets": state.next_offsets,
                    "low_watermarks": state.joiner.low_watermarks(),
                    "join_counters": vars(state.joiner.counters),
                    "models": state.models,
                    "evidence": {r: _digest(dump(e)) for r, e in sorted(state.evidence.items())},
                }
                for n, state in sorted(second.partitions.items())
            },
            "merged": {r: dump(e) for r, e in sorted(second.merged_evidence().items())},
        },
    }


def _letter(event: Any) -> dict[str, Any]:
    return {
        "topic": event.source_topic,
        "reason": event.reason,
        "key": event.original_key,
        "sha256": event.payload_sha256,
    }


def _snapshot(snapshot: Any) -> dict[str, Any]:
    return {
        "next_offsets": snapshot.next_offsets,
        "low_offsets": snapshot.low_offsets,
        "evidence": {r: _digest(dump(e)) for r, e in sorted(snapshot.evidence.items())},
    }


def _digest(value: Any) -> str:
    """A section pinned by hash (the merged evidence is pinned in full: readable diffs)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _key(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return "|".join(str(getattr(p, "value", p)) for p in parts)


def _table(table: dict[Any, Any], view: Any) -> dict[str, Any]:
    return {_key(k): view(v) for k, v in sorted(table.items(), key=lambda kv: _key(kv[0]))}


def _stats(acc: Any) -> dict[str, Any]:
    if hasattr(acc, "successes"):
        return {"n": acc.n, "successes": acc.successes}
    if hasattr(acc, "covariance"):
        return {
            "n": acc.n,
            "mean_x": acc.mean_x,
            "mean_y": acc.mean_y,
            "m2x": acc.variance_x * (acc.n - 1),
            "m2y": acc.variance_y * (acc.n - 1),
            "cxy": acc.covariance * (acc.n - 1),
        }
    return {"n": acc.n, "mean": acc.mean, "m2": acc.population_variance * acc.n}


def _sketch(sketch: Any) -> dict[str, Any]:
    return {
        "n": sketch.n,
        "zero": sketch._zero,
        "max": sketch._max,
        "bins": {str(i): c for i, c in sorted(sketch._bins.items())},
        "p50_p95_p99": sketch.get(),
    }


def _sample(reservoir: Any) -> dict[str, Any]:
    items = json.dumps(reservoir.items(), sort_keys=True)
    ids = json.dumps(sorted(reservoir.ids()))
    return {
        "seen": reservoir.seen,
        "size": len(reservoir),
        "ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        "items_sha256": hashlib.sha256(items.encode()).hexdigest(),
    }


def _ratio(counts: Any) -> dict[str, Any]:
    units = counts._units
    return {
        "requests": [counts.requests_challenger, counts.requests_total],
        "units": [counts.units_challenger, counts.units_total],
        "units_sha256": hashlib.sha256(repr(sorted(units.items())).encode()).hexdigest(),
    }


def _windows(windows: Any) -> dict[str, Any]:
    return {
        "newest": windows.newest_bucket,
        "first": windows.first_bucket,
        "buckets": {
            str(b): [calls, errors, {str(i): c for i, c in sorted(bins.items())}]
            for b, (calls, errors, bins) in sorted(windows._buckets.items())
        },
    }


def dump(evidence: RolloutEvidence) -> dict[str, Any]:
    """Everything the judge reads of ``evidence``, in a canonical order."""
    slo = evidence.slo_windows()
    return {
        "summary": evidence.summary(),
        "calls": _table(evidence._calls, _stats),
        "latency_moments": _table(evidence._latency_moments, _stats),
        "latency_sketches": _table(evidence._latency, _sketch),
        "two_sample": _table(evidence._two_sample, _stats),
        "paired": _table(evidence._paired, _stats),
        "ratio": {k: _ratio(c) for k, (_, c) in evidence.ratio_strata().items()},
        "inputs": _table(evidence._inputs, _sample),
        "outputs": _table(evidence._outputs, _sample),
        "slo": {
            "unparsed": slo.unparsed,
            "arms": {arm.value: _windows(slo.arm(arm)) for arm in Arm},
        },
    }


def canonical() -> dict[str, Any]:
    """:func:`run` through JSON, as the golden file holds it."""
    return json.loads(json.dumps(run(), sort_keys=True))  # type: ignore[no-any-return]


def test_the_evidence_of_a_fixed_stream_is_unchanged() -> None:
    expected = json.loads(GOLDEN.read_text())
    actual = canonical()
    # Section by section first, for a readable failure; then the whole.
    for worker in ("first", "second"):
        for name in sorted(expected[worker]):
            assert actual[worker][name] == expected[worker][name], f"{worker}.{name} changed"
    assert actual == expected


def test_the_stream_exercises_what_it_claims() -> None:
    golden = json.loads(GOLDEN.read_text())["second"]
    counts = golden["counts"]
    assert counts["replayed"] > 0 and counts["duplicates"] > 0 and counts["dead_letters"] >= 3
    joins = [p["join_counters"] for p in golden["partitions"].values()]
    for counter in ("expired_without_outcome", "dropped_orphan_outcomes", "duplicates"):
        assert sum(j[counter] for j in joins) > 0, counter
    merged = golden["merged"]["ro"]
    assert {"canary|challenger", "shadow|champion"} <= set(merged["inputs"])
    assert merged["inputs"]["canary|champion"]["seen"] > 1_000  # the sample evicts
    assert merged["paired"] and merged["two_sample"] and merged["slo"]["unparsed"] > 0


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(canonical(), sort_keys=True, indent=0) + "\n")
    print(f"wrote {GOLDEN}")
