"""Dead letters always fit in a Kafka record and describe the whole refused record."""

from __future__ import annotations

import base64
import hashlib
import json

from modelcanary.events import (
    DEAD_LETTER_PAYLOAD_BYTES,
    DEAD_LETTER_TEXT_CHARS,
    MAX_EVENT_BYTES,
    DeadLetterEvent,
    encode,
)

#: librdkafka's default ``message.max.bytes``: a larger record is refused by the producer.
PRODUCER_LIMIT = 1_000_000


def test_a_small_record_is_kept_whole() -> None:
    raw = b"\x00junk"
    letter = json.loads(encode(DeadLetterEvent.wrap("t.predictions", raw, "not JSON", b"k")))
    assert base64.b64decode(letter["payload"]) == raw
    assert letter["payload_truncated"] is False
    assert letter["payload_size"] == len(raw)
    assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()


def test_an_oversized_record_is_cut_and_its_letter_fits_a_kafka_record() -> None:
    raw = b'{"padding": "' + b"\xff" * 3_000_000 + b'"}'
    reason = f"event of {len(raw)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit " + "!" * 10**6
    key = "\u00e9".encode() * 500_000  # each character 6 bytes once JSON-escaped
    event = DeadLetterEvent.wrap("t.outcomes", raw, reason, key)
    letter_bytes = encode(event)
    assert len(letter_bytes) + len(event.key.encode()) < PRODUCER_LIMIT
    letter = json.loads(letter_bytes)
    kept = base64.b64decode(letter["payload"])
    assert letter["payload_truncated"] is True
    assert kept == raw[:DEAD_LETTER_PAYLOAD_BYTES]
    assert letter["payload_size"] == len(raw)
    assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert letter["reason"].startswith(f"event of {len(raw)} bytes exceeds")
    assert len(letter["reason"]) == len(letter["original_key"]) == DEAD_LETTER_TEXT_CHARS


def test_a_tombstone_has_an_empty_payload() -> None:
    letter = DeadLetterEvent.wrap("t.decisions", b"", "a record without a value", None)
    assert (letter.payload, letter.payload_size, letter.payload_truncated) == ("", 0, False)
    assert letter.key == "t.decisions"


def test_the_id_of_a_letter_made_from_a_record_position_is_derived_from_it() -> None:
    def letter(offset: int, raw: bytes = b"poison") -> DeadLetterEvent:
        return DeadLetterEvent.wrap("t.evaluator-state", raw, "why", b"0", partition=1,
                                    offset=offset)  # fmt: skip

    assert letter(7).event_id == letter(7).event_id  # the same record read again
    assert letter(7).event_id != letter(8).event_id
    # a restarted memory-only broker reuses offsets: other bytes there are another letter
    assert letter(7).event_id != letter(7, b"other poison").event_id
    assert (letter(7).source_partition, letter(7).source_offset) == (1, 7)
    unplaced = DeadLetterEvent.wrap("t.predictions", b"poison", "why")
    assert unplaced.event_id != DeadLetterEvent.wrap("t.predictions", b"poison", "why").event_id
