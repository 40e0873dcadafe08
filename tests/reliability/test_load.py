"""Sustained load: 60 s at a fixed rate against the whole running system.

Every user request succeeds, every request's events reach Kafka, and the serving
process's memory stays bounded (its resident memory is sampled every few seconds and
reported in the terminal summary).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.reliability.conftest import Stack
from tests.reliability.stack import FixedRateTraffic, events_of, tree_rss, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

LOAD_S = 60.0
RATE_PER_S = 40.0  # /predict calls per second, each followed by a /feedback
SAMPLE_EVERY_S = 5.0
MIB = 1024 * 1024
#: Growth of the serving process tree's resident memory over the run. Generous: objects
#: of a request live ~10 s (BentoML's traffic timeout) and allocators keep freed pages.
MAX_GROWTH_MIB = 150


def test_sustained_load_has_no_errors_and_bounded_memory(stack: Stack, measure) -> None:
    stack.ensure_running_rollout()
    pid = stack.serving.process.pid
    samples = [tree_rss(pid)]
    traffic = FixedRateTraffic(stack.url, stack.row, RATE_PER_S, tag="load").start()
    try:
        while time.monotonic() - traffic.t0 < LOAD_S:
            time.sleep(SAMPLE_EVERY_S)
            samples.append(tree_rss(pid))
    finally:
        calls = traffic.stop()
    samples.append(tree_rss(pid))
    growth = (samples[-1] - samples[0]) / MIB
    measure("requests", len(calls))
    measure("achieved_rate_per_s", round(traffic.achieved_rate(), 1))
    measure("p50_ms", round(traffic.latency_quantile(0.5) * 1000, 1))
    measure("p99_ms", round(traffic.latency_quantile(0.99) * 1000, 1))
    measure("rss_mib_samples", [round(s / MIB) for s in samples])
    measure("rss_growth_mib", round(growth, 1))

    failed = traffic.failed()
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    assert len(calls) >= 0.97 * RATE_PER_S * LOAD_S
    assert traffic.achieved_rate() == pytest.approx(RATE_PER_S, rel=0.05)
    assert {c.arm for c in calls} == {"champion", "challenger"}
    assert growth < MAX_GROWTH_MIB, f"serving grew by {growth:.0f} MiB: {samples}"

    wait_until(lambda: stack.client.get("/healthz").json()["spool_depth"] == 0, 20, "delivery")
    health = stack.client.get("/healthz").json()
    assert health["events_dropped"] == 0 and health["kafka"] == "ok", health
    _assert_every_request_has_its_events(stack, [c.request_id for c in calls])


def _assert_every_request_has_its_events(stack: Stack, request_ids: list[str]) -> None:
    predictions, outcomes = events_of(stack.settings, request_ids)
    with_prediction = Counter(p.request_id for p in predictions)
    with_outcome = Counter(o.request_id for o in outcomes)
    missing = [r for r in request_ids if not with_prediction[r] or not with_outcome[r]]
    assert not missing, f"{len(missing)} requests lack an event, e.g. {missing[:3]}"
    assert all(with_outcome[r] == 1 for r in request_ids)
