"""The instruction-count benchmark's pure parts: callgrind files, request ids, comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.serving_instructions import (
    compare,
    parse_callgrind,
    request_ids,
    thread_totals,
    variants_option,
)
from modelcanary.events import Arm

CALLGRIND_FILE = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  python serving_instructions.py --child canary spec.json 200 200
part: 1
thread: {thread}

events: Ir Dr ILmr

summary: 0 0 0

fn=(1) main
3 5 1 0

totals: {totals}
"""


def _write(folder: Path, name: str, thread: int, totals: str) -> None:
    (folder / name).write_text(CALLGRIND_FILE.format(thread=thread, totals=totals))


def test_the_totals_line_of_a_callgrind_file_gives_its_events(tmp_path: Path) -> None:
    _write(tmp_path, "cg.canary.1-01", 1, "1000 300 7")
    assert parse_callgrind(tmp_path / "cg.canary.1-01") == {"Ir": 1000, "Dr": 300, "ILmr": 7}


def test_thread_one_is_the_request_thread_and_the_rest_are_summed(tmp_path: Path) -> None:
    _write(tmp_path, "cg.canary.77-01", 1, "1000 300 7")
    _write(tmp_path, "cg.canary.77-02", 2, "0 0 0")
    _write(tmp_path, "cg.canary.77-07", 7, "50 10 2")
    _write(tmp_path, "cg.canary.77-10", 10, "25 5 1")
    _write(tmp_path, "cg.plain.78-01", 1, "900 290 6")  # another variant's: not counted
    (tmp_path / "canary.log").write_text("valgrind's own log")
    request, others = thread_totals(tmp_path, "canary")
    assert request == {"Ir": 1000, "Dr": 300, "ILmr": 7}
    assert others == {"Ir": 75, "Dr": 15, "ILmr": 3}


def test_a_variant_without_output_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no callgrind output for canary"):
        thread_totals(tmp_path, "canary")


def test_every_tenth_request_goes_to_the_challenger_whatever_the_salt() -> None:
    def route(key: str) -> Arm:  # a stand-in for the router's table: ~1 in 7 challenger
        return Arm.CHALLENGER if hash(key) % 7 == 0 else Arm.CHAMPION

    ids = request_ids(50, route)
    assert len(set(ids)) == 50
    assert len({len(i) for i in ids}) == 1
    assert [route(i) for i in ids] == [
        Arm.CHALLENGER if i % 10 == 9 else Arm.CHAMPION for i in range(50)
    ]


def test_without_a_router_the_ids_are_simply_numbered() -> None:
    assert request_ids(3, None) == ["bench-000000", "bench-000001", "bench-000002"]


def test_the_comparison_is_per_request_and_part() -> None:
    results = {
        "plain": {"per_request": {"request_thread": {"Ir": 100.0}, "all": {"Ir": 100.0}}},
        "canary": {"per_request": {"request_thread": {"Ir": 104.0}, "all": {"Ir": 110.0}}},
    }
    comparison = compare(results, "plain", "canary")
    assert comparison["added"] == {"request_thread": {"Ir": 4.0}, "all": {"Ir": 10.0}}
    assert comparison["ratio_instructions"] == pytest.approx(100 / 110, abs=1e-4)


@pytest.mark.parametrize("text", ["plain", "plain,plain", "plain,shadow", "a,b,c"])
def test_the_variants_option_names_what_it_accepts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\. plain,canary"):
        variants_option(text)


def test_the_variants_option_takes_a_base_and_a_variant() -> None:
    assert variants_option("canary, plain") == ["canary", "plain"]
