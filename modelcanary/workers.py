"""Long-running workers: the evaluator loop and the controller loop, wired to Kafka and MLflow.

Both stop cleanly when ``stop`` is set (SIGTERM/SIGINT handlers set it in the CLI).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from modelcanary.config import Settings
from modelcanary.controller import Controller
from modelcanary.errors import EventError, RegistryError
from modelcanary.evaluator import Evaluator
from modelcanary.events import DeadLetterEvent, decode_decision
from modelcanary.infra.topics import ensure_topics
from modelcanary.kafka_io import EventPublisher, RecordConsumer
from modelcanary.policy import Policy
from modelcanary.registry import Registry
from modelcanary.rollout import Rollout
from modelcanary.rollout_store import RolloutStore

log = logging.getLogger(__name__)

EVALUATOR_GROUP = "modelcanary-evaluator"
CONTROLLER_GROUP = "modelcanary-controller"


def _rollout_reader(store: RolloutStore) -> Callable[[str], tuple[Rollout | None, Policy | None]]:
    def read(model: str) -> tuple[Rollout | None, Policy | None]:
        try:
            rollout = store.load(model)
            policy = store.load_policy(model) if rollout is not None else None
        except RegistryError as exc:
            log.warning("cannot read rollout of %s, judging it later: %s", model, exc)
            return None, None
        return rollout, policy

    return read


def run_evaluator(
    settings: Settings,
    stop: threading.Event,
    judge_interval_s: float = 1.0,
    on_tick: Callable[[Evaluator], None] | None = None,
) -> Evaluator:
    """Consume predictions and outcomes until ``stop``; judge every ``judge_interval_s``.

    The evaluator reads every partition from the beginning (no group, no committed
    offsets) and rebuilds its state from the log on restart; decisions it re-publishes
    for states a rollout has left are ignored by the controller.
    """
    bootstrap = settings.resolved_kafka_bootstrap()
    ensure_topics(bootstrap, settings.topics.all(), settings.partitions)
    store = RolloutStore(Registry(settings.resolved_mlflow_uri()))
    publisher = EventPublisher(bootstrap, client_id="modelcanary-evaluator")
    consumer = RecordConsumer(
        bootstrap,
        [settings.topics.predictions, settings.topics.outcomes],
        group_id=None,
        client_id="modelcanary-evaluator",
    )
    evaluator = Evaluator(settings.topics, publisher, _rollout_reader(store))
    next_tick = time.monotonic()
    try:
        while not stop.is_set():
            for record in consumer.poll(timeout_ms=100):
                evaluator.handle(record)
            if time.monotonic() >= next_tick:
                for decision in evaluator.tick():
                    log.info(
                        "%s %s: %s", decision.rollout_id, decision.action.value, decision.reason
                    )
                if on_tick is not None:
                    on_tick(evaluator)
                next_tick = time.monotonic() + judge_interval_s
    finally:
        consumer.close()
        publisher.flush()
        publisher.close()
    return evaluator


def run_controller(
    settings: Settings,
    stop: threading.Event,
    retry_backoff_s: float = 1.0,
    on_applied: Callable[[object], None] | None = None,
) -> None:
    """Apply decisions from the decisions topic until ``stop``.

    Offsets are committed only after a decision has been applied (or judged stale), so
    a crash re-reads it; :meth:`Controller.apply` is idempotent. While MLflow is
    unreachable the same decision is retried with backoff; nothing after it is read.
    """
    bootstrap = settings.resolved_kafka_bootstrap()
    ensure_topics(bootstrap, settings.topics.all(), settings.partitions)
    controller = Controller(Registry(settings.resolved_mlflow_uri()))
    publisher = EventPublisher(bootstrap, client_id="modelcanary-controller")
    consumer = RecordConsumer(
        bootstrap,
        [settings.topics.decisions],
        group_id=CONTROLLER_GROUP,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        client_id="modelcanary-controller",
    )
    try:
        while not stop.is_set():
            for record in consumer.poll(timeout_ms=200):
                try:
                    decision = decode_decision(record.value)
                except EventError as exc:
                    publisher.publish(
                        settings.topics.deadletter,
                        DeadLetterEvent.wrap(
                            record.topic, record.value or b"", str(exc), record.key
                        ),
                    )
                    continue
                while not stop.is_set():
                    try:
                        applied = controller.apply(decision)
                        break
                    except RegistryError as exc:
                        log.warning("cannot apply %s yet, retrying: %s", decision.event_id, exc)
                        stop.wait(retry_backoff_s)
                else:
                    return
                if applied.applied:
                    log.info("applied %s: %s", decision.action.value, applied.note)
                if on_applied is not None:
                    on_applied(applied)
            consumer.commit()
    finally:
        consumer.close()
        publisher.flush()
        publisher.close()
