"""Spools of events Kafka could not take: a bounded FIFO on local disk, and its in-memory twin.

A spool holds ``(topic, key, value)`` records in the order they were appended. The
publisher appends what the broker did not acknowledge, and replays it in the same order
once the broker is back: :meth:`peek` reads the oldest records without removing them,
:meth:`commit` removes them once they are delivered. A record that was delivered but not
committed (the process died in between) is sent again; consumers deduplicate by the
event's ``event_id``.

:class:`DiskSpool` survives a process crash (every append is flushed to the operating
system before ``append`` returns; there is no fsync, so a power loss can lose the last
appends). Its folder holds segment files of records and a ``cursor`` file naming the
first record not yet delivered::

    record = crc32 (4 bytes) | topic length | key length | value length (4 bytes each, big
             endian) | topic | key | value        -- crc32 covers the three lengths and bytes

A torn record at the end of the last segment (the process died mid-write) is cut off
when the spool is opened. Several processes may share one spool root: each takes the
first free ``slot-N`` folder, held with an exclusive ``flock`` for the life of the
process, so a restarted process picks up (and replays) what a dead one left behind.

Both spools are bounded: an append that would exceed the bound is refused (and counted
in ``refused``), never blocking and never evicting older records, so what is kept stays
a gap-free prefix of the stream.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, NamedTuple, Protocol

_HEADER = struct.Struct(">IIII")
SEGMENT_BYTES = 8 * 1024 * 1024
_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor"
_LOCK = ".lock"
MAX_SLOTS = 64


class SpoolRecord(NamedTuple):
    """One undelivered Kafka record (a tuple: serving makes one per event, and a tuple is
    made at a third of a frozen dataclass's cost)."""

    topic: str
    key: bytes
    value: bytes

    @property
    def size(self) -> int:
        return _HEADER.size + len(self.topic.encode()) + len(self.key) + len(self.value)


class Spool(Protocol):
    """What the publisher needs from a spool (see the module docstring)."""

    @property
    def depth(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def refused(self) -> int: ...

    def append(self, records: Iterable[SpoolRecord]) -> int: ...
    def peek(self, max_records: int) -> list[SpoolRecord]: ...
    def commit(self, count: int) -> None: ...
    def close(self) -> None: ...


class MemorySpool:
    """The in-memory twin of :class:`DiskSpool`: same contract, gone when the process ends."""

    def __init__(self, max_records: int = 100_000) -> None:
        self.max_records = max_records
        self._records: deque[SpoolRecord] = deque()
        self._bytes = 0
        self._refused = 0
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        return len(self._records)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def refused(self) -> int:
        return self._refused

    def append(self, records: Iterable[SpoolRecord]) -> int:
        """Append in order; returns how many were kept (the rest were refused)."""
        kept = 0
        with self._lock:
            for record in records:
                if len(self._records) >= self.max_records:
                    self._refused += 1
                    continue
                self._records.append(record)
                self._bytes += record.size
                kept += 1
        return kept

    def peek(self, max_records: int) -> list[SpoolRecord]:
        with self._lock:
            return [self._records[i] for i in range(min(max_records, len(self._records)))]

    def commit(self, count: int) -> None:
        with self._lock:
            for _ in range(min(count, len(self._records))):
                self._bytes -= self._records.popleft().size

    def close(self) -> None:
        return None


def _encode(record: SpoolRecord) -> bytes:
    topic = record.topic.encode()
    lengths = struct.pack(">III", len(topic), len(record.key), len(record.value))
    body = lengths + topic + record.key + record.value
    return struct.pack(">I", zlib.crc32(body)) + body


def _read_record(handle: IO[bytes]) -> SpoolRecord | None:
    """The next record, or None at the end or at a torn / corrupt record."""
    header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    crc, topic_len, key_len, value_len = _HEADER.unpack(header)
    rest = handle.read(topic_len + key_len + value_len)
    if len(rest) < topic_len + key_len + value_len:
        return None
    if zlib.crc32(header[4:] + rest) != crc:
        return None
    topic = rest[:topic_len].decode()
    key = rest[topic_len : topic_len + key_len]
    return SpoolRecord(topic, key, rest[topic_len + key_len :])


class DiskSpool:
    """A bounded FIFO of records in one folder (see the module docstring)."""

    def __init__(self, folder: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._refused = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._cursor_segment, self._cursor_offset = self._read_cursor()
        self._depth, self._bytes = self._scan_and_repair()
        segments = self._segments()
        self._write_segment = segments[-1] if segments else self._cursor_segment
        self._writer: IO[bytes] | None = None

    # -- opening ------------------------------------------------------------------
    @classmethod
    def open_slot(cls, root: Path, max_bytes: int) -> DiskSpool:
        """The first ``root/slot-N`` folder no other live process holds, locked for us."""
        root.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            folder = root / f"slot-{slot}"
            folder.mkdir(exist_ok=True)
            lock = (folder / _LOCK).open("a+b")
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            spool = cls(folder, max_bytes)
            spool._lock_handle = lock  # held (and the flock with it) until close()
            return spool
        raise OSError(f"all {MAX_SLOTS} spool slots under {root} are held by live processes")

    def _segment_path(self, number: int) -> Path:
        return self.folder / f"{number:012d}{_SEGMENT_SUFFIX}"

    def _segments(self) -> list[int]:
        numbers = []
        for path in self.folder.glob(f"*{_SEGMENT_SUFFIX}"):
            with contextlib.suppress(ValueError):
                numbers.append(int(path.name[: -len(_SEGMENT_SUFFIX)]))
        return sorted(numbers)

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self.folder / _CURSOR).read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            segments = self._segments()
            return (segments[0] if segments else 1), 0

    def _write_cursor(self) -> None:
        tmp = self.folder / (_CURSOR + ".tmp")
        tmp.write_text(f"{self._cursor_segment} {self._cursor_offset}")
        os.replace(tmp, self.folder / _CURSOR)

    def _scan_and_repair(self) -> tuple[int, int]:
        """Count undelivered records; drop segments before the cursor; cut a torn tail."""
        depth = size = 0
        for number in self._segments():
            path = self._segment_path(number)
            if number < self._cursor_segment:
                path.unlink(missing_ok=True)
                continue
            start = self._cursor_offset if number == self._cursor_segment else 0
            with path.open("rb") as handle:
                handle.seek(start)
                good_end = start
                while (record := _read_record(handle)) is not None:
                    depth += 1
                    size += record.size
                    good_end = handle.tell()
            if good_end < path.stat().st_size:
                with path.open("r+b") as handle:
                    handle.truncate(good_end)
        return depth, size

    # -- the Spool contract -------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._depth

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def refused(self) -> int:
        return self._refused

    def append(self, records: Iterable[SpoolRecord]) -> int:
        """Append in order and flush; returns how many were kept (the rest were refused)."""
        kept = 0
        with self._lock:
            for record in records:
                if self._bytes + record.size > self.max_bytes:
                    self._refused += 1
                    continue
                writer = self._writer_for(record.size)
                writer.write(_encode(record))
                self._depth += 1
                self._bytes += record.size
                kept += 1
            if self._writer is not None:
                self._writer.flush()
        return kept

    def _writer_for(self, size: int) -> IO[bytes]:
        if self._writer is not None and self._writer.tell() + size > self.segment_bytes:
            self._writer.close()
            self._writer = None
            self._write_segment += 1
        if self._writer is None:
            self._writer = self._segment_path(self._write_segment).open("ab")
        return self._writer

    def peek(self, max_records: int) -> list[SpoolRecord]:
        """Up to ``max_records`` of the oldest undelivered records, oldest first."""
        with self._lock:
            if self._writer is not None:
                self._writer.flush()
            return [record for record, _ in self._iter_from_cursor(max_records)]

    def _iter_from_cursor(self, limit: int) -> list[tuple[SpoolRecord, tuple[int, int]]]:
        """Records after the cursor, each with the cursor position just after it."""
        out: list[tuple[SpoolRecord, tuple[int, int]]] = []
        segment, offset = self._cursor_segment, self._cursor_offset
        while len(out) < limit and segment <= self._write_segment:
            path = self._segment_path(segment)
            if path.exists():
                with path.open("rb") as handle:
                    handle.seek(offset)
                    while len(out) < limit and (record := _read_record(handle)) is not None:
                        out.append((record, (segment, handle.tell())))
                    if len(out) >= limit:
                        break
            segment, offset = segment + 1, 0
        return out

    def commit(self, count: int) -> None:
        """Forget the ``count`` oldest records (they were delivered)."""
        if count <= 0:
            return
        with self._lock:
            consumed = self._iter_from_cursor(count)
            if not consumed:
                return
            old_segment = self._cursor_segment
            self._cursor_segment, self._cursor_offset = consumed[-1][1]
            self._depth -= len(consumed)
            self._bytes -= sum(record.size for record, _ in consumed)
            if self._depth == 0 and self._writer is not None:
                # Empty: start a fresh segment so the folder does not grow for ever.
                self._writer.close()
                self._writer = None
                self._write_segment += 1
                self._cursor_segment, self._cursor_offset = self._write_segment, 0
            self._write_cursor()
            for number in range(old_segment, self._cursor_segment):
                self._segment_path(number).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            lock = getattr(self, "_lock_handle", None)
            if lock is not None:
                lock.close()  # releases the flock
                self._lock_handle = None


def records_size(records: Sequence[SpoolRecord]) -> int:
    return sum(record.size for record in records)
