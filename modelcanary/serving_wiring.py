"""Build a serving router from settings: the real Kafka publisher and MLflow registry."""

from __future__ import annotations

from modelcanary.config import Settings
from modelcanary.kafka_io import EventPublisher
from modelcanary.registry import Registry
from modelcanary.rollout_store import RolloutStore
from modelcanary.router import ModelRouter


def build_router(settings: Settings) -> ModelRouter:
    registry = Registry(settings.resolved_mlflow_uri())
    store = RolloutStore(registry)
    publisher = EventPublisher(settings.resolved_kafka_bootstrap(), client_id="modelcanary-serving")
    model = settings.model_name
    return ModelRouter(
        model=model,
        predictions_topic=settings.topics.predictions,
        outcomes_topic=settings.topics.outcomes,
        publisher=publisher,
        read_snapshot=lambda: store.snapshot(model),
        load_predictor=lambda version: registry.load_predictor(model, version),
        reconcile_interval_s=settings.reconcile_interval_s,
    )
