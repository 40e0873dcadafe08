"""Model calls are tallied on the request path and flushed into Prometheus metrics: what a
scrape reads after a flush is what observing each call directly would have written."""

from __future__ import annotations

import random
import threading

import prometheus_client as prom
from prometheus_client import CollectorRegistry

from modelcanary.serving_metrics import LATENCY_BUCKETS_S, ServingMetrics


def _samples(*metrics: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    for metric in metrics:
        registry.register(metric)  # type: ignore[arg-type]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_flushed_tallies_equal_direct_observation() -> None:
    rng = random.Random(7)
    metrics = ServingMetrics("m")
    labels = ["model", "version", "role"]
    requests = prom.Counter("modelcanary_model_requests", "", labels, registry=None)
    errors = prom.Counter("modelcanary_model_errors", "", [*labels, "kind"], registry=None)
    latency = prom.Histogram(
        "modelcanary_model_latency_seconds", "", labels, buckets=LATENCY_BUCKETS_S, registry=None
    )
    # bucket bounds themselves included: a latency equal to a bound is in that bucket
    latencies = [rng.choice([*LATENCY_BUCKETS_S, rng.expovariate(200.0), 9.0]) for _ in range(3000)]
    for i, latency_s in enumerate(latencies):
        version, role = rng.choice([("1", "champion"), ("2", "challenger"), ("2", "shadow")])
        kind = rng.choice([None, None, None, "exception", "timeout", "overloaded"])
        metrics.model_call(version, role, latency_s, kind)
        requests.labels("m", version, role).inc()
        if kind != "overloaded":
            latency.labels("m", version, role).observe(latency_s)
        if kind is not None:
            errors.labels("m", version, role, kind).inc()
        if i == 1000:
            metrics.flush()  # flushes add up
    metrics.flush()
    expected = _samples(requests, errors, latency)
    actual = _samples(metrics._requests, metrics._errors, metrics._latency)
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(actual[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_calls_from_several_threads_are_all_counted() -> None:
    metrics = ServingMetrics("m")

    def report() -> None:
        for _ in range(5000):
            metrics.model_call("1", "shadow", 0.001, None)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(50):
        metrics.flush()
    for thread in threads:
        thread.join()
    metrics.flush()
    samples = _samples(metrics._requests)
    assert samples[("modelcanary_model_requests_total", (("model", "m"), ("role", "shadow"),
                                                          ("version", "1")))] == 20_000  # fmt: skip
