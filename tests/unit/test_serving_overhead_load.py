"""The overhead benchmark's load: fixed-rate requests evenly spaced, slices charged their spill."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from itertools import pairwise
from statistics import median

import pytest

from benchmarks.serving_overhead import (
    _process_cpu_ns,
    _python_load,
    charged_rps,
    median_interval,
    paused,
)


async def _serve_and_load(rate: float, seconds: float, connections: int) -> list[float]:
    """Arrival times at a minimal HTTP/1.1 keep-alive server while the load runs."""
    arrivals: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrivals.append(time.perf_counter())
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = await _python_load(
        f"http://127.0.0.1:{port}/predict", b"{}", seconds, connections, rate
    )
    server.close()
    assert result["errors"] == 0 and len(result["latencies_ms"]) == len(arrivals)
    return arrivals


def test_fixed_rate_requests_arrive_evenly_spaced_across_connections() -> None:
    arrivals = asyncio.run(_serve_and_load(rate=100.0, seconds=1.5, connections=4))
    gaps_ms = [(b - a) * 1000.0 for a, b in pairwise(arrivals)]
    assert 130 <= len(arrivals) <= 160  # 100 requests/s for 1.5 s
    assert 8.0 <= median(gaps_ms) <= 12.0  # one every 10 ms
    # four connections sending together would put three gaps of ~0 ms in every four
    bursts = sum(gap < 3.0 for gap in gaps_ms)
    assert bursts <= len(gaps_ms) * 0.1, sorted(gaps_ms)[:20]


def test_a_slice_is_charged_with_the_cpu_its_service_spent_after_it() -> None:
    # 990 answered and 10 errors in 2 s; 20 ms of deferred work afterwards
    result = {"rps": 500.0, "ok": 990, "errors": 10}
    assert charged_rps(result, 0.0) == 495.0
    assert charged_rps(result, 0.02) == 990 / 2.02
    assert charged_rps({"rps": 0.0, "ok": 0, "errors": 0}, 0.01) == 0.0


def test_cpu_time_is_read_in_nanoseconds_ended_threads_included() -> None:
    before = _process_cpu_ns(os.getpid())
    if before is None:
        pytest.skip("no CPU-time clock of a process on this system")

    def spin() -> None:
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    worker.join()
    spent = _process_cpu_ns(os.getpid()) - before
    assert 50_000_000 <= spent < 5_000_000_000  # the ended thread's 50 ms counted
    assert _process_cpu_ns(2**22 + 12345) is None  # no such process


def test_paused_services_use_no_cpu_and_run_again_afterwards() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        if _process_cpu_ns(spinner.pid) is None:
            pytest.skip("no CPU-time clock of a process on this system")
        with paused([spinner.pid]):
            time.sleep(0.05)  # the stop has landed
            before = _process_cpu_ns(spinner.pid)
            time.sleep(0.3)
            assert _process_cpu_ns(spinner.pid) == before
        time.sleep(0.3)
        assert _process_cpu_ns(spinner.pid) > before
    finally:
        spinner.kill()
        spinner.wait()


def test_the_interval_of_the_median_widens_with_the_spread_of_the_rounds() -> None:
    steady = [0.95, 0.952, 0.948, 0.951, 0.949, 0.95, 0.953, 0.947]
    noisy = [0.947, 1.069, 0.984, 0.942, 0.968, 0.937, 1.022, 0.945]
    low, high = median_interval(steady)
    assert low <= median(steady) <= high and high - low < 0.005
    low, high = median_interval(noisy)
    assert low <= median(noisy) <= high and high - low > 0.03
    assert median_interval(noisy) == [low, high]  # the same draws every time
    assert median_interval([0.96] * 8) == [0.96, 0.96]
