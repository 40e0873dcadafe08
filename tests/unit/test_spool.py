"""The spool contract, run against the disk spool and its in-memory twin alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelcanary.spool import DiskSpool, MemorySpool, Spool, SpoolRecord


def _records(n: int, start: int = 0) -> list[SpoolRecord]:
    return [
        SpoolRecord("topic.a", f"k{i}".encode(), f'{{"i":{i}}}'.encode())
        for i in range(start, start + n)
    ]


SpoolFactory = Callable[[int], Spool]


@pytest.fixture(params=["disk", "memory"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> SpoolFactory:
    def build(limit: int) -> Spool:
        if request.param == "memory":
            return MemorySpool(max_records=limit)
        size = _records(1)[0].size
        return DiskSpool(tmp_path / "spool", max_bytes=limit * size, segment_bytes=size * 7)

    return build


def test_records_come_back_oldest_first_and_leave_on_commit(make: SpoolFactory) -> None:
    spool = make(100)
    assert spool.append(_records(30)) == 30
    assert spool.depth == 30
    assert spool.peek(10) == _records(10)
    assert spool.peek(10) == _records(10), "peek does not remove"
    spool.commit(10)
    assert spool.depth == 20 and spool.peek(5) == _records(5, start=10)
    spool.append(_records(5, start=30))
    spool.commit(20)
    assert spool.peek(100) == _records(5, start=30)
    spool.commit(5)
    assert spool.depth == 0 and spool.size_bytes == 0 and spool.peek(10) == []


def test_a_full_spool_refuses_new_records_and_keeps_the_old(make: SpoolFactory) -> None:
    spool = make(10)
    assert spool.append(_records(15)) == 10
    assert spool.refused == 5
    assert spool.peek(20) == _records(10)


def test_the_disk_spool_survives_a_restart_where_it_stopped(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = DiskSpool(folder, max_bytes=10**6, segment_bytes=200)
    spool.append(_records(40))
    spool.commit(13)
    spool.close()
    again = DiskSpool(folder, max_bytes=10**6, segment_bytes=200)
    assert again.depth == 27
    assert again.peek(100) == _records(27, start=13)
    again.append(_records(3, start=40))
    assert again.peek(100)[-3:] == _records(3, start=40)


def test_a_torn_last_record_is_cut_off_when_the_spool_is_opened(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = DiskSpool(folder, max_bytes=10**6)
    spool.append(_records(5))
    spool.close()
    segment = sorted(folder.glob("*.seg"))[-1]
    segment.write_bytes(segment.read_bytes()[:-3])  # the process died mid-write
    again = DiskSpool(folder, max_bytes=10**6)
    assert again.peek(10) == _records(4)
    again.append(_records(1, start=9))
    assert again.peek(10) == [*_records(4), *_records(1, start=9)]


def test_delivered_segments_are_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    spool = DiskSpool(folder, max_bytes=10**6, segment_bytes=150)
    spool.append(_records(50))
    assert len(list(folder.glob("*.seg"))) > 3
    spool.commit(50)
    assert sum(p.stat().st_size for p in folder.glob("*.seg")) == 0


def test_each_live_process_gets_its_own_slot_and_a_dead_ones_slot_is_reused(
    tmp_path: Path,
) -> None:
    first = DiskSpool.open_slot(tmp_path, max_bytes=10**6)
    second = DiskSpool.open_slot(tmp_path, max_bytes=10**6)
    assert first.folder != second.folder
    first.append(_records(3))
    first.close()  # the process holding it is gone
    third = DiskSpool.open_slot(tmp_path, max_bytes=10**6)
    assert third.folder == first.folder and third.peek(10) == _records(3)
    second.close()
    third.close()
