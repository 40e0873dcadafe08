"""Evaluator workers as real processes in one consumer group on a real broker.

Two workers decide exactly as one on the same preloaded events; a worker killed with
SIGKILL mid-stream (half the events preloaded, the other half published while it dies)
is replaced by the other, and the final verdict does not change.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from modelcanary.config import Settings, Topics
from modelcanary.evaluator_worker import read_latest_snapshots
from modelcanary.events import OutcomeEvent, PredictionEvent
from modelcanary.infra.topics import ensure_topics
from modelcanary.judging import JudgeLoop
from modelcanary.kafka_io import EventPublisher
from modelcanary.launch import Component, start_worker
from modelcanary.policy import default_policy
from modelcanary.rollout import new_rollout
from tests.integration.canary_events import canary_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 12_000
POLICY = dataclasses.replace(
    default_policy(),
    steps=(dataclasses.replace(default_policy().steps[0], traffic_fraction=0.3),),
)


def events(seed: int = 7) -> list[PredictionEvent | OutcomeEvent]:
    rng = random.Random(seed)
    out = canary_events(rng, REQUESTS, "ro")
    rng.shuffle(out)  # outcomes before predictions, and late ones
    return out


def preload(kafka_bootstrap: str, tmp_path, prefix: str, share: float = 1.0) -> Settings:
    """Topics named ``prefix`` holding the first ``share`` of :func:`events`."""
    settings = Settings(
        data_dir=tmp_path / prefix, kafka_bootstrap=kafka_bootstrap,
        mlflow_uri="http://127.0.0.1:9", topics=Topics(prefix), partitions=4,
        session_timeout_ms=1_000, heartbeat_interval_ms=300, max_poll_interval_ms=2_000,
        snapshot_interval_s=0.5,
    )  # fmt: skip
    ensure_topics(kafka_bootstrap, settings.topics.all(), settings.partitions)
    everything = events()
    publish(settings, everything[: int(len(everything) * share)])
    return settings


def publish(
    settings: Settings, batch: list[PredictionEvent | OutcomeEvent], pause_every: int = 0
) -> None:
    publisher = EventPublisher(settings.resolved_kafka_bootstrap())
    for i, event in enumerate(batch, 1):
        topic = (settings.topics.predictions if isinstance(event, PredictionEvent)
                 else settings.topics.outcomes)  # fmt: skip
        publisher.publish(topic, event)
        if pause_every and i % pause_every == 0:
            time.sleep(0.05)  # a stream, not a burst
    publisher.flush(30)
    assert publisher.failed == 0
    publisher.close()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def processed(settings: Settings) -> int:
    snapshots = read_latest_snapshots(
        settings.resolved_kafka_bootstrap(), settings.topics.evaluator_state,
        settings.state_key.encode(),
    )  # fmt: skip
    return sum(sum(s.next_offsets.values()) for s in snapshots.values())


def verdict(settings: Settings) -> tuple[str, dict]:
    loop = JudgeLoop(settings.topics, None, lambda m: (None, None))  # type: ignore[arg-type]
    snapshots = read_latest_snapshots(
        settings.resolved_kafka_bootstrap(), settings.topics.evaluator_state,
        settings.state_key.encode(),
    )  # fmt: skip
    for snapshot in snapshots.values():
        loop.update(snapshot)
    rollout = dataclasses.replace(new_rollout("m", "1", "2", POLICY, now=0.0), rollout_id="ro")
    judgement = loop.judge_rollout(rollout, POLICY, now=60.0)
    gates = {g["gate"]: (g["verdict"], g["samples"], g["estimate"])
             for g in judgement.evidence["gates"]}  # fmt: skip
    return judgement.action.value, gates


def run_to_end(settings: Settings, workers: int, kill_one: bool = False) -> tuple[str, dict]:
    started: list[Component] = [start_worker(settings, "evaluate") for _ in range(workers)]
    try:
        if kill_one:  # half the events are in: the other half streams in while one dies
            wait_until(lambda: processed(settings) > 0, 60, "a first snapshot")
            rest = events()[REQUESTS:]
            stream = threading.Thread(target=publish, args=(settings, rest, 500))
            stream.start()
            time.sleep(0.5)
            victim = started.pop(0)
            os.kill(victim.process.pid, signal.SIGKILL)
            stream.join(60)
            assert not stream.is_alive()
        wait_until(lambda: processed(settings) == 2 * REQUESTS, 120, "every event evaluated")
        return verdict(settings)
    finally:
        for component in started:
            component.stop()


def test_two_workers_decide_as_one_and_survive_a_kill(kafka_bootstrap: str, tmp_path) -> None:
    tag = uuid.uuid4().hex[:6]
    one = run_to_end(preload(kafka_bootstrap, tmp_path, f"one{tag}"), workers=1)
    two = run_to_end(preload(kafka_bootstrap, tmp_path, f"two{tag}"), workers=2)
    killed = run_to_end(preload(kafka_bootstrap, tmp_path, f"kill{tag}", share=0.5), workers=2,
                        kill_one=True)  # fmt: skip
    assert one[0] == "rollback" and one[1]["accuracy"][0] == "fail"
    assert two == one
    assert killed == one
