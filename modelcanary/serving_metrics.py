"""Prometheus metrics of a serving worker, labelled by model, version and role.

Roles: ``champion`` (the champion answered), ``challenger`` (the challenger answered a
canary request, or failed to), ``shadow`` (a mirrored call to the challenger). The
glossary calls the candidate "challenger" in code, events and metrics.

=============================================  =========  ==============================
metric                                         type       labels
=============================================  =========  ==============================
``modelcanary_model_requests_total``           counter    model, version, role
``modelcanary_model_errors_total``             counter    model, version, role, kind
``modelcanary_model_latency_seconds``          histogram  model, version, role
``modelcanary_invalid_requests_total``         counter    model
``modelcanary_events_produced_total``          counter    model, topic
``modelcanary_events_spooled_total``           counter    model
``modelcanary_events_dropped_total``           counter    model
``modelcanary_spool_depth``                    gauge      model (sum over live workers)
``modelcanary_kafka_spooling``                 gauge      model (1 while any worker spools)
=============================================  =========  ==============================

Error kinds: ``exception`` (the model raised), ``timeout`` (slower than the challenger
timeout), ``overloaded`` (every challenger thread was busy, the call was not made).

Model calls are tallied in plain Python on the request path (:class:`_Tally`: a count,
latency buckets, a sum) and added to the Prometheus metrics by :meth:`ServingMetrics.flush`,
which the worker runs every reconcile tick (1 s) and before it answers a scrape. In a
BentoML worker each Prometheus update takes a lock and writes a memory-mapped file
(multiprocess mode): three of them per call cost ~3 us, and several times that in
cache misses on a request path, against ~0.5 us for a tally. A scrape therefore sees
the scraped worker's calls up to that moment and the other workers' up to their last
tick.

``prometheus_client`` is imported when the first :class:`ServingMetrics` is built, not at
module import: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` in a worker after importing the
service module, and ``prometheus_client`` picks its storage when it is first imported.
Metrics are not registered in the default registry; in a BentoML worker they are written
to the multiprocess files that BentoML's ``/metrics`` collects from every worker.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Protocol

from modelcanary.kafka_io import PublisherStats

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


class CallObserver(Protocol):
    """What the router reports about every model call (see :class:`ServingMetrics`)."""

    def model_call(
        self, version: str, role: str, latency_s: float, error_kind: str | None
    ) -> None: ...

    def invalid_request(self) -> None: ...


class NoMetrics:
    """A :class:`CallObserver` that records nothing (tests, benchmarks)."""

    def model_call(self, version: str, role: str, latency_s: float, error_kind: str | None) -> None:
        return None

    def invalid_request(self) -> None:
        return None


class _Tally:
    """Calls of one (version, role) not yet added to the Prometheus metrics."""

    __slots__ = ("buckets", "calls", "errors", "latency_sum")

    def __init__(self, buckets: int) -> None:
        self.calls = 0
        self.buckets = [0] * buckets  # by histogram bucket, +Inf last (not cumulative)
        self.latency_sum = 0.0
        self.errors: dict[str, int] = {}


class ServingMetrics:
    """The metrics of one serving worker for one model (see the module docstring)."""

    def __init__(self, model: str) -> None:
        import prometheus_client as prom

        self.model = model
        labels = ["model", "version", "role"]
        self._requests = prom.Counter(
            "modelcanary_model_requests", "Calls to a model version", labels, registry=None
        )
        self._errors = prom.Counter(
            "modelcanary_model_errors",
            "Failed calls to a model version, by kind (exception, timeout, overloaded)",
            [*labels, "kind"],
            registry=None,
        )
        self._latency = prom.Histogram(
            "modelcanary_model_latency_seconds",
            "Latency of calls to a model version",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self._invalid = prom.Counter(
            "modelcanary_invalid_requests",
            "Requests refused because their features do not fit the signature",
            ["model"],
            registry=None,
        ).labels(model)
        self._produced = prom.Counter(
            "modelcanary_events_produced",
            "Events acknowledged by Kafka",
            ["model", "topic"],
            registry=None,
        )
        self._spooled = prom.Counter(
            "modelcanary_events_spooled",
            "Events written to the disk spool while Kafka was unavailable",
            ["model"],
            registry=None,
        ).labels(model)
        self._dropped = prom.Counter(
            "modelcanary_events_dropped",
            "Events lost: queue or spool full, or refused by Kafka for good",
            ["model"],
            registry=None,
        ).labels(model)
        self._spool_depth = prom.Gauge(
            "modelcanary_spool_depth",
            "Events waiting in the disk spool",
            ["model"],
            registry=None,
            multiprocess_mode="livesum",
        ).labels(model)
        self._spooling = prom.Gauge(
            "modelcanary_kafka_spooling",
            "1 while events are spooled instead of sent to Kafka",
            ["model"],
            registry=None,
            multiprocess_mode="livemax",
        ).labels(model)
        self._bounds = (*LATENCY_BUCKETS_S, float("inf"))
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._tally_lock = threading.Lock()  # challenger and shadow threads report too
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def model_call(self, version: str, role: str, latency_s: float, error_kind: str | None) -> None:
        with self._tally_lock:
            tally = self._tallies.get((version, role))
            if tally is None:
                tally = self._tallies[(version, role)] = _Tally(len(self._bounds))
            tally.calls += 1
            if error_kind != "overloaded":  # an overloaded call was never made
                # the first bucket whose bound is >= the latency, as Histogram.observe
                tally.buckets[bisect_left(self._bounds, latency_s)] += 1
                tally.latency_sum += latency_s
            if error_kind is not None:
                tally.errors[error_kind] = tally.errors.get(error_kind, 0) + 1

    def flush(self) -> None:
        """Add the calls tallied since the last flush to the Prometheus metrics."""
        with self._tally_lock:
            tallies, self._tallies = self._tallies, {}
        for (version, role), tally in tallies.items():
            self._requests.labels(self.model, version, role).inc(tally.calls)
            observed = sum(tally.buckets)
            if observed:
                histogram = self._latency.labels(self.model, version, role)
                # Histogram has no bulk update: its bucket and sum values are what its
                # observe() increments (prometheus_client 0.17-0.26, checked by a test)
                for value, count in zip(histogram._buckets, tally.buckets, strict=True):
                    if count:
                        value.inc(count)
                histogram._sum.inc(tally.latency_sum)
            for kind, count in tally.errors.items():
                self._errors.labels(self.model, version, role, kind).inc(count)

    def invalid_request(self) -> None:
        self._invalid.inc()

    def publisher(self, stats: PublisherStats) -> None:
        """Bring the metrics up to date: the calls tallied (:meth:`flush`), and the event
        metrics with the publisher's counters."""
        self.flush()
        with self._lock:
            for topic, delivered in stats.delivered_by_topic.items():
                delta = delivered - self._last.get(f"topic:{topic}", 0)
                if delta > 0:
                    self._produced.labels(self.model, topic).inc(delta)
                self._last[f"topic:{topic}"] = delivered
            for name, counter, value in (
                ("spooled", self._spooled, stats.spooled),
                ("dropped", self._dropped, stats.dropped),
            ):
                delta = value - self._last.get(name, 0)
                if delta > 0:
                    counter.inc(delta)
                self._last[name] = value
            self._spool_depth.set(stats.spool_depth)
            self._spooling.set(0 if stats.state == "ok" else 1)
