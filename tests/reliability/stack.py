"""Helpers of the reliability suite: fixed-rate traffic, reading topics to their end,
evidence from partition snapshots, memory of a process tree, a webhook receiver."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psutil
from kafka import KafkaConsumer, TopicPartition

from modelcanary.config import Settings
from modelcanary.controller import Controller
from modelcanary.evaluator_worker import MAX_SNAPSHOT_BYTES, read_latest_snapshots
from modelcanary.events import (
    Action,
    DecisionEvent,
    OutcomeEvent,
    PredictionEvent,
    decode_outcome,
    decode_prediction,
)
from modelcanary.infra.processes import LOCALHOST, free_port
from modelcanary.judge import RolloutEvidence
from modelcanary.kafka_io import Record
from modelcanary.policy import Policy, Step, default_policy


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(poll_s)


# -- traffic ---------------------------------------------------------------------------
@dataclass
class Call:
    """One user of the service: a /predict, then a /feedback for the same request id."""

    request_id: str
    unit_id: str
    scheduled: float
    started: float = 0.0
    predict_status: int = 0  # -1: no HTTP answer at all (connection error, timeout)
    predict_s: float = 0.0
    version: str | None = None
    arm: str | None = None
    feedback_status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.predict_status == 200 and self.feedback_status in (None, 200)


class FixedRateTraffic:
    """Calls at a fixed rate from a scheduler thread, each run on a small thread pool.

    Call ``i`` is due at ``t0 + i / rate``; a call that is late starts at once (the pool
    absorbs slow answers, so the rate holds as long as answers take less than
    ``threads / rate`` seconds on average). Unit ids cycle over ``units`` users, so
    routing is sticky and both arms of a canary see traffic.
    """

    def __init__(
        self,
        url: str,
        row: dict[str, Any],
        rate_per_s: float,
        *,
        feedback: bool = True,
        label: int = 1,
        units: int = 50,
        threads: int = 8,
        tag: str | None = None,
    ) -> None:
        self.url = url
        self.row = row
        self.rate_per_s = rate_per_s
        self.feedback = feedback
        self.label = label
        self.units = units
        self.tag = tag or uuid.uuid4().hex[:6]
        self.calls: list[Call] = []
        self._client = httpx.Client(base_url=url, timeout=10.0)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="traffic")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="traffic", daemon=True)
        self.t0 = 0.0
        self.t_end = 0.0

    def start(self) -> FixedRateTraffic:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[Call]:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True)
        self._client.close()
        self.t_end = time.monotonic()
        return self.calls

    def _schedule(self) -> None:
        i = 0
        while not self._stop.is_set():
            due = self.t0 + i / self.rate_per_s
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            call = Call(f"{self.tag}-{i}", f"unit-{i % self.units}", due)
            self.calls.append(call)
            self._pool.submit(self._run, call)
            i += 1

    def _run(self, call: Call) -> None:
        call.started = time.monotonic()
        body = {"features": self.row, "request_id": call.request_id, "unit_id": call.unit_id}
        try:
            response = self._client.post("/predict", json=body)
            call.predict_s = time.monotonic() - call.started
            call.predict_status = response.status_code
            if response.status_code != 200:
                call.error = response.text[:300]
                return
            answer = response.json()
            call.version, call.arm = answer["version"], answer["arm"]
            if self.feedback:
                feedback = {"request_id": call.request_id, "label": self.label}
                reply = self._client.post("/feedback", json=feedback)
                call.feedback_status = reply.status_code
                if reply.status_code != 200:
                    call.error = reply.text[:300]
        except httpx.HTTPError as exc:
            call.predict_s = call.predict_s or time.monotonic() - call.started
            call.predict_status = call.predict_status or -1
            call.feedback_status = -1 if call.predict_status == 200 else None
            call.error = f"{type(exc).__name__}: {exc}"

    # -- views -----------------------------------------------------------------------
    def failed(self) -> list[Call]:
        return [c for c in self.calls if c.started and not c.ok]

    def done(self) -> list[Call]:
        return [c for c in self.calls if c.started]

    def achieved_rate(self) -> float:
        done = self.done()
        if len(done) < 2:
            return 0.0
        return (len(done) - 1) / (done[-1].started - done[0].started)

    def latency_quantile(self, q: float) -> float:
        latencies = sorted(c.predict_s for c in self.done())
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0


# -- Kafka ------------------------------------------------------------------------------
def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every record of ``topic`` from its beginning, no consumer group.

    Reads past the reported end offsets until a poll brings nothing: the embedded broker
    (Tansu 0.6) reports the base offset of a partition's last batch as its end offset,
    so the records of that batch lie beyond it.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        fetch_max_bytes=MAX_SNAPSHOT_BYTES,
        max_partition_fetch_bytes=MAX_SNAPSHOT_BYTES,
    )
    records: list[Record] = []
    try:
        numbers = consumer.partitions_for_topic(topic) or set()
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        if not partitions:
            return records
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batches = consumer.poll(timeout_ms=500)
            for tp, messages in batches.items():
                records.extend(
                    Record(tp.topic, tp.partition, m.offset, m.key, m.value) for m in messages
                )
            if not batches and all(consumer.position(tp) >= end[tp] for tp in partitions):
                return records
    finally:
        consumer.close(autocommit=False)


def next_offsets(records: Iterable[Record]) -> dict[str, dict[int, int]]:
    """``{topic: {partition: last offset + 1}}`` of ``records``."""
    out: dict[str, dict[int, int]] = {}
    for r in records:
        current = out.setdefault(r.topic, {}).get(r.partition, 0)
        out[r.topic][r.partition] = max(current, r.offset + 1)
    return out


def events_of(
    settings: Settings, request_ids: Iterable[str], timeout_s: float = 20.0
) -> tuple[list[PredictionEvent], list[OutcomeEvent]]:
    """Every prediction and outcome event on the topics, once each of ``request_ids`` has
    at least one of both (or after ``timeout_s``: the last events may still be lingering
    in a publisher's queue when the traffic stops)."""
    bootstrap = settings.resolved_kafka_bootstrap()
    wanted = set(request_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        predictions = [
            decode_prediction(r.value) for r in read_topic(bootstrap, settings.topics.predictions)
        ]
        outcomes = [
            decode_outcome(r.value) for r in read_topic(bootstrap, settings.topics.outcomes)
        ]
        missing = (wanted - {p.request_id for p in predictions}) | (
            wanted - {o.request_id for o in outcomes}
        )
        if not missing or time.monotonic() > deadline:
            return predictions, outcomes
        time.sleep(1.0)


def snapshot_offsets(settings: Settings) -> dict[str, dict[int, int]]:
    """``{topic: {partition: next offset}}`` as the latest evaluator snapshots say."""
    snapshots = read_latest_snapshots(
        settings.resolved_kafka_bootstrap(),
        settings.topics.evaluator_state,
        settings.state_key.encode(),
    )
    out: dict[str, dict[int, int]] = {}
    for number, snapshot in snapshots.items():
        for topic, offset in snapshot.next_offsets.items():
            out.setdefault(topic, {})[number] = offset
    return out


def evaluated_everything(settings: Settings) -> bool:
    """Whether the evaluators' snapshots cover the predictions and outcomes topics to their end."""
    bootstrap = settings.resolved_kafka_bootstrap()
    seen = snapshot_offsets(settings)
    for topic in (settings.topics.predictions, settings.topics.outcomes):
        ends = next_offsets(read_topic(bootstrap, topic)).get(topic, {})
        if any(seen.get(topic, {}).get(p, 0) < end for p, end in ends.items()):
            return False
    return True


def snapshot_evidence(settings: Settings, rollout_id: str) -> RolloutEvidence:
    """The rollout's evidence merged over the latest snapshot of every partition."""
    snapshots = read_latest_snapshots(
        settings.resolved_kafka_bootstrap(),
        settings.topics.evaluator_state,
        settings.state_key.encode(),
    )
    parts = [s.evidence[rollout_id] for s in snapshots.values() if rollout_id in s.evidence]
    return RolloutEvidence.merged(parts)


# -- rollouts ---------------------------------------------------------------------------
def gated_policy(fraction: float = 0.5) -> Policy:
    """One canary step that waits for a manual approval: the judge never moves it alone."""
    step = Step(fraction, min_samples=50, max_duration_s=3600.0, requires_approval=True)
    return dataclasses.replace(default_policy(), steps=(step,))


def restart_rollout(controller: Controller, model: str, version: str, policy: Policy) -> str:
    """Abort the model's rollout if one is going on, then start one of ``version``."""
    rollout = controller.store.load(model)
    if rollout is not None and not rollout.state.terminal:
        abort = DecisionEvent(
            model=model,
            rollout_id=rollout.rollout_id,
            action=Action.ABORT,
            from_state=rollout.label,
            to_state="aborted",
            traffic_fraction=0.0,
            reason="test setup",
        )
        assert controller.apply(abort).applied
    return controller.start(model, version, policy).rollout_id


# -- processes --------------------------------------------------------------------------
def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in bytes."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


# -- webhook receiver -------------------------------------------------------------------
@dataclass
class WebhookReceiver:
    """An HTTP server that records every POST; the first ``fail_first`` get a 500."""

    fail_first: int = 0
    posts: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                receiver.posts.append((self.path, self.rfile.read(length)))
                failing = len(receiver.posts) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None

        self._server = ThreadingHTTPServer((LOCALHOST, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.port}{path}"

    def decisions(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
