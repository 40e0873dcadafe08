"""MODELCANARY_WORKER_CPUS: parsing, the CPU each worker gets, and pinning for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelcanary.config import load_settings
from modelcanary.cpu_affinity import _ranges, choose_cpu, parse_worker_cpus
from modelcanary.errors import ConfigError
from modelcanary.launch import bentoml_serve_command

linux_only = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="pinning threads needs Linux"
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("off", None),
        ("", None),
        (" OFF ", None),
        ("dedicated", None),  # no list: whether to pin depends on the CPUs (choose_cpu)
        ("auto", []),
        ("Auto", []),
        ("3", [3]),
        ("0-3,8", [0, 1, 2, 3, 8]),
        ("2,0-1,1", [2, 0, 1]),
    ],
)
def test_parses_off_auto_and_cpu_lists(spec: str, expected: list[int] | None) -> None:
    assert parse_worker_cpus(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("all", "is not off, dedicated, auto or a CPU list such as 0-3,8"),
        ("0-x", "is not off, dedicated, auto or a CPU list"),
        ("1,,2", "is not off, dedicated, auto or a CPU list"),
        ("3-1", "'3-1' is not a CPU range"),
        ("-1", "is not off, dedicated, auto or a CPU list"),
        ("0-999999999", "CPU 999999999 does not exist (at most 8191)"),
    ],
)
def test_a_bad_spec_names_the_variable_and_the_form(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match="MODELCANARY_WORKER_CPUS") as caught:
        parse_worker_cpus(spec)
    assert message in str(caught.value)


def test_auto_gives_the_workers_the_usable_cpus_in_turn() -> None:
    allowed = {4, 2, 7}
    assert [choose_cpu("auto", i, allowed) for i in (1, 2, 3, 4)] == [2, 4, 7, 2]


def test_a_list_is_used_in_the_order_written() -> None:
    assert [choose_cpu("3,1", i, {0, 1, 2, 3}) for i in (1, 2, 3)] == [3, 1, 3]


def test_off_pins_nothing_and_an_unknown_worker_index_counts_as_the_first() -> None:
    assert choose_cpu("off", 1, {0, 1}) is None
    assert choose_cpu("auto", 0, {5, 6}) == 5


def test_dedicated_pins_only_a_replica_with_one_cpu_per_worker() -> None:
    # a cpuset of two CPUs for two workers: each its own
    assert [choose_cpu("dedicated", i, {6, 3}, workers=2) for i in (1, 2)] == [3, 6]
    assert choose_cpu("Dedicated", 1, {5}) == 5  # one worker, one CPU
    # more CPUs than workers (a shared host): nothing says which cores are free
    assert choose_cpu("dedicated", 1, {0, 1}, workers=1) is None
    assert choose_cpu("dedicated", 1, {0, 1, 2, 3}, workers=2) is None
    # fewer CPUs than workers: two workers would share a core
    assert choose_cpu("dedicated", 1, {0}, workers=2) is None
    assert choose_cpu("dedicated", 3, {0, 1}, workers=2) is None  # no such worker


def test_a_cpu_the_process_may_not_use_is_refused_with_the_ones_it_may() -> None:
    with pytest.raises(ConfigError, match=r"CPU\(s\) \[9\] are not available .* may use 0-2,5"):
        choose_cpu("1,9", 1, {0, 1, 2, 5})


def test_ranges_text() -> None:
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert _ranges([3]) == "3"


def test_settings_refuse_a_bad_spec_at_load() -> None:
    with pytest.raises(ConfigError, match="MODELCANARY_WORKER_CPUS"):
        load_settings({"MODELCANARY_WORKER_CPUS": "fast"})
    assert load_settings({}).worker_cpus == "dedicated"
    assert load_settings({"MODELCANARY_WORKER_CPUS": "0-1"}).worker_cpus == "0-1"


_PIN_IN_A_CHILD = """
import json, os, sys, threading
from modelcanary.cpu_affinity import pin_worker

started_before = threading.Event()
hold = threading.Event()
early = threading.Thread(target=lambda: (started_before.set(), hold.wait()))
early.start()
started_before.wait()
if len(sys.argv) > 4:  # the CPUs this process may use, as a cpuset would give them
    os.sched_setaffinity(0, {int(c) for c in sys.argv[4].split(",")})
cpu = pin_worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
late = threading.Thread(target=hold.wait)
late.start()
affinities = {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
hold.set()
print(json.dumps({"cpu": cpu, "threads": len(affinities), "affinities": list(affinities.values())}))
"""


def _pin_in_a_child(
    spec: str, worker_index: int, workers: int = 1, cpuset: list[int] | None = None
) -> dict:
    cpus = [",".join(map(str, cpuset))] if cpuset else []
    result = subprocess.run(
        [sys.executable, "-c", _PIN_IN_A_CHILD, spec, str(worker_index), str(workers), *cpus],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


@linux_only
def test_pinning_moves_every_thread_and_new_threads_inherit_it() -> None:
    usable = sorted(os.sched_getaffinity(0))
    worker = 2
    expected = usable[(worker - 1) % len(usable)]
    pinned = _pin_in_a_child("auto", worker)
    assert pinned["cpu"] == expected
    assert pinned["threads"] == 3  # main, one started before pinning, one after
    assert pinned["affinities"] == [[expected]] * 3


@linux_only
def test_off_leaves_the_threads_where_they_were() -> None:
    usable = sorted(os.sched_getaffinity(0))
    pinned = _pin_in_a_child("off", 1)
    assert pinned["cpu"] is None
    assert pinned["affinities"] == [usable] * 3


@linux_only
def test_dedicated_pins_a_worker_whose_replica_has_one_cpu_per_worker() -> None:
    cpu = max(os.sched_getaffinity(0))
    pinned = _pin_in_a_child("dedicated", 1, workers=1, cpuset=[cpu])
    assert pinned["cpu"] == cpu
    assert pinned["affinities"] == [[cpu]] * 3


@linux_only
def test_dedicated_leaves_a_worker_with_more_cpus_than_workers_alone() -> None:
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("needs two CPUs")
    pinned = _pin_in_a_child("dedicated", 1, workers=1, cpuset=usable[:2])
    assert pinned["cpu"] is None
    assert pinned["affinities"] == [usable[:2]] * 3


@linux_only
def test_the_serve_command_refuses_a_cpu_this_process_may_not_use() -> None:
    missing = max(os.sched_getaffinity(0)) + 1
    settings = load_settings({"MODELCANARY_WORKER_CPUS": str(missing)})
    with pytest.raises(ConfigError, match=rf"CPU\(s\) \[{missing}\] are not available"):
        bentoml_serve_command(settings, "127.0.0.1", 3000, Path("."))
    usable = load_settings({"MODELCANARY_WORKER_CPUS": "auto"})
    assert "bentoml" in bentoml_serve_command(usable, "127.0.0.1", 3000, Path("."))
