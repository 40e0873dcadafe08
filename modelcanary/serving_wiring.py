"""Build one serving worker from settings: router, Kafka publisher with disk spool, decisions.

Order at start: the publisher first (it creates the topics when Kafka answers, and spools
when it does not), then the router's first reconcile with MLflow, then the reconcile loop
and the decision watcher. At stop the reverse: watcher, router, then the publisher, which
delivers what it can within a few seconds and leaves the rest in the disk spool for the
next process to replay.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelcanary.config import Settings
from modelcanary.decision_watch import DecisionWatcher
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import EventPublisher
from modelcanary.registry import Registry
from modelcanary.rollout_store import RolloutStore
from modelcanary.router import ModelRouter
from modelcanary.serving_metrics import CallObserver, NoMetrics, ServingMetrics
from modelcanary.spool import DiskSpool

#: How long the sender waits to batch events. Each round wakes the sender thread, which
#: then takes the GIL from the thread that answers requests, and waits for the broker's
#: acknowledgement: rare, large rounds keep logging cheap. (Measured with the earlier
#: pure-Python producer: at 20 ms an event cost ~200 us of CPU at 300 requests/s, at 200
#: ms ~45 us.) Events reach Kafka at most this much later.
SERVING_LINGER_MS = 200
TOPIC_TIMEOUT_S = 5.0


@dataclass
class Serving:
    """The parts of one serving worker."""

    router: ModelRouter
    publisher: EventPublisher
    watcher: DecisionWatcher
    metrics: CallObserver

    def start(self) -> None:
        self.router.start()
        self.watcher.start()

    def stop(self, flush_s: float = 5.0) -> None:
        self.watcher.stop()
        self.router.stop()
        if isinstance(self.metrics, ServingMetrics):
            self.metrics.flush()  # the calls of the last tick
        self.publisher.close(flush_s)


def build_serving(settings: Settings, with_metrics: bool = True) -> Serving:
    import mlflow

    bootstrap = settings.resolved_kafka_bootstrap()
    mlflow_uri = settings.resolved_mlflow_uri()
    # Loading a version downloads ``models:/NAME/VERSION``, which MLflow resolves through
    # its process-wide tracking and registry URIs, whatever the client was built with.
    # Without this a worker started from a clean environment cannot load any model.
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    registry = Registry(mlflow_uri)
    store = RolloutStore(registry)
    model = settings.model_name
    topics = settings.topics

    def prepare() -> None:
        ensure_topics(bootstrap, topics.all(), settings.partitions, timeout_s=TOPIC_TIMEOUT_S)

    publisher = EventPublisher(
        bootstrap,
        client_id="modelcanary-serving",
        linger_ms=SERVING_LINGER_MS,
        spool=DiskSpool.open_slot(settings.spool_dir / model, settings.spool_max_bytes),
        prepare=prepare,
        require_broker=False,
        delivery_timeout_ms=settings.event_delivery_timeout_ms,
    )
    metrics: CallObserver = ServingMetrics(model) if with_metrics else NoMetrics()
    on_tick = None
    if isinstance(metrics, ServingMetrics):
        serving_metrics = metrics

        def on_tick() -> None:
            serving_metrics.publisher(publisher.stats())

    router = ModelRouter(
        model=model,
        predictions_topic=topics.predictions,
        outcomes_topic=topics.outcomes,
        publisher=publisher,
        read_snapshot=lambda: store.snapshot(model),
        load_predictor=lambda version: registry.load_predictor(model, version),
        reconcile_interval_s=settings.reconcile_interval_s,
        challenger_timeout_s=settings.challenger_timeout_ms / 1000.0,
        inline_calls=settings.challenger_inline,
        observer=metrics,
        on_tick=on_tick,
    )
    watcher = DecisionWatcher(bootstrap, topics.decisions, model, router.follow)
    return Serving(router, publisher, watcher, metrics)
