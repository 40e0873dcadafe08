"""read_latest_snapshots: poison written after a partition's snapshot does not hide it."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaProducer

from modelcanary.evaluator_worker import SNAPSHOT_FALLBACK, read_latest_snapshots
from modelcanary.infra.topics import ensure_topics
from modelcanary.snapshot import MAGIC, Snapshot, encode_snapshot

pytestmark = pytest.mark.integration

KEY = b"the state key"


def test_the_newest_snapshot_that_verifies_is_restored(kafka_bootstrap: str) -> None:
    topic = f"state{uuid.uuid4().hex[:8]}.evaluator-state"
    ensure_topics(kafka_bootstrap, [topic], 1)
    older = Snapshot(partition=0, next_offsets={"p": 5}, low_offsets={}, written_at=1.0)
    newer = Snapshot(partition=0, next_offsets={"p": 9}, low_offsets={}, written_at=2.0)
    forged = Snapshot(partition=0, next_offsets={"p": 10**9}, low_offsets={}, written_at=3.0)
    other = Snapshot(partition=1, next_offsets={"p": 3}, low_offsets={}, written_at=1.0)
    poison = [b"not a snapshot", MAGIC + b"\x00" * 40, encode_snapshot(forged, b"wrong key")]
    assert len(poison) < SNAPSHOT_FALLBACK
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        records = [
            (b"0", encode_snapshot(older, KEY)),
            (b"0", encode_snapshot(newer, KEY)),
            *[(b"0", value) for value in poison],
            (b"1", encode_snapshot(other, KEY)),
            (b"1", None),  # a tombstone after partition 1's only snapshot
        ]
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()
    latest = read_latest_snapshots(kafka_bootstrap, topic, KEY)
    assert sorted(latest) == [0, 1]
    assert latest[0].next_offsets == {"p": 9}
    assert latest[1].next_offsets == {"p": 3}
