"""Long-running workers: the evaluator loop and the controller loop, wired to Kafka and MLflow.

Both stop cleanly when ``stop`` is set (SIGTERM/SIGINT handlers set it in the CLI).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import TypeVar

from modelcanary.audit import AuditLog
from modelcanary.config import Settings
from modelcanary.controller import Applied, Controller
from modelcanary.errors import EventError, ModelcanaryError, RegistryError, RegistryUnavailableError
from modelcanary.evaluator_worker import MAX_SNAPSHOT_BYTES, EvaluatorWorker
from modelcanary.events import Action, DeadLetterEvent, DecisionEvent, decode_decision
from modelcanary.infra.topics import ensure_topics
from modelcanary.judging import JudgeLoop
from modelcanary.kafka_io import EventPublisher, Record, RecordConsumer
from modelcanary.notify import WebhookNotifier
from modelcanary.policy import Policy
from modelcanary.registry import Registry
from modelcanary.report import attach_report
from modelcanary.rollout import Rollout
from modelcanary.rollout_store import RolloutStore
from modelcanary.snapshot import decode_snapshot
from modelcanary.stats.drift import warm_up

log = logging.getLogger(__name__)
T = TypeVar("T")


def _rollout_reader(store: RolloutStore) -> Callable[[str], tuple[Rollout | None, Policy | None]]:
    def read(model: str) -> tuple[Rollout | None, Policy | None]:
        try:
            return store.load_for_judging(model)
        except RegistryError as exc:
            log.warning("cannot read rollout of %s, judging it later: %s", model, exc)
            return None, None

    return read


def run_evaluator(settings: Settings, stop: threading.Event) -> EvaluatorWorker:
    """Run one evaluator worker (a consumer-group member) until ``stop``."""
    bootstrap = settings.resolved_kafka_bootstrap()
    ensure_topics(bootstrap, settings.topics.all(), settings.partitions)
    worker = EvaluatorWorker(settings)
    worker.run(stop)
    return worker


class JudgeThread(threading.Thread):
    """Follows the evaluator-state topic, merges partition snapshots, judges on a tick."""

    def __init__(
        self, settings: Settings, publisher: EventPublisher, stop: threading.Event,
        interval_s: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(name="judge", daemon=True)
        self.settings = settings
        self.stop_event = stop
        self.interval_s = interval_s
        self.publisher = publisher
        store = RolloutStore(Registry(settings.resolved_mlflow_uri()))
        self.loop = JudgeLoop(settings.topics, publisher, _rollout_reader(store),
                              discover=store.active_models)  # fmt: skip
        self.key = settings.state_key.encode()
        self.consumer = RecordConsumer(
            settings.resolved_kafka_bootstrap(), [settings.topics.evaluator_state],
            group_id=None, client_id="modelcanary-judge", max_fetch_bytes=MAX_SNAPSHOT_BYTES,
        )  # fmt: skip

    def run(self) -> None:
        # Evidently takes ~3 s to import: pay it now, not in the first judgement.
        warm_up()
        next_tick = time.monotonic()
        try:
            while not self.stop_event.is_set():
                for record in self.consumer.poll(timeout_ms=100):
                    try:
                        self.loop.update(decode_snapshot(record.value, self.key))
                    except EventError as exc:
                        self._dead_letter(record, str(exc))
                if time.monotonic() >= next_tick:
                    try:
                        for decision in self.loop.tick():
                            log.info("%s %s: %s", decision.rollout_id, decision.action.value,
                                     decision.reason)  # fmt: skip
                    except ModelcanaryError as exc:
                        log.warning("judging failed, retrying next tick: %s", exc)
                    except Exception:  # a bug must not silently end the judge thread
                        log.exception("judging crashed, retrying next tick")
                    next_tick = time.monotonic() + self.interval_s
        finally:
            self.consumer.close()

    def _dead_letter(self, record: Record, reason: str) -> None:
        """Send a snapshot that does not decode (or verify) to the dead-letter topic.

        The judge reads every record of the state topic, each once while it runs: it is
        the one that dead-letters poison there (evaluators read the topic again at every
        rebalance, and only its latest record per partition). A restarted judge reads the
        topic from its beginning again and sends the same dead letters again, with the
        same ``event_id`` (derived from topic, partition, offset and payload), which
        readers deduplicate by.
        """
        log.error("snapshot at %s[%d]@%d dead-lettered: %s", record.topic, record.partition,
                  record.offset, reason)  # fmt: skip
        letter = DeadLetterEvent.wrap(
            record.topic, record.value or b"", reason, record.key,
            partition=record.partition, offset=record.offset,
        )  # fmt: skip
        self.publisher.publish(self.settings.topics.deadletter, letter)


class ReportWriter(threading.Thread):
    """Attaches evaluation reports to decision runs, off the path that applies decisions.

    A report takes seconds to render and log (2-4 s against a local MLflow); written in
    line, it delayed every decision queued behind it, another model's rollback included.
    A report that fails is logged and skipped (``modelcanary report`` renders it again
    on demand); :meth:`close` waits for the queued ones, up to a timeout.
    """

    def __init__(self, registry: Registry) -> None:
        super().__init__(name="reports", daemon=True)
        self.registry = registry
        self.written = 0
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()

    def submit(self, rollout_id: str, run_id: str, action: str) -> None:
        self._queue.put((rollout_id, run_id, action))

    def run(self) -> None:
        while (job := self._queue.get()) is not None:
            rollout_id, run_id, action = job
            try:
                path = attach_report(self.registry, rollout_id, run_id=run_id)
                self.written += 1
                log.info("report of %s (%s): %s", rollout_id, action, path)
            except ModelcanaryError as exc:
                log.warning("report of %s not attached: %s", rollout_id, exc)
            except Exception:  # a report must never end the thread that writes the next
                log.exception("report of %s failed", rollout_id)

    def close(self, timeout_s: float = 30.0) -> None:
        self._queue.put(None)
        self.join(timeout_s)
        if self.is_alive():
            log.warning("reports still being written after %.0f s: left unfinished", timeout_s)


def _until_done(
    stop: threading.Event, what: str, call: Callable[[], T], backoff_s: float
) -> T | None:
    """Call until MLflow is reachable again (:class:`RegistryUnavailableError`); None if stopped."""
    while not stop.is_set():
        try:
            return call()
        except RegistryUnavailableError as exc:
            log.warning("cannot %s yet, retrying in %.1f s: %s", what, backoff_s, exc)
            stop.wait(backoff_s)
    return None


def _handle_decision(
    decision: DecisionEvent,
    controller: Controller,
    audit: AuditLog,
    notifier: WebhookNotifier,
    reports: ReportWriter,
    stop: threading.Event,
    backoff_s: float,
    drift_reports: MutableMapping[str, str] | None = None,
) -> Applied | None:
    """Apply, record, queue the report, notify — in that order (see :func:`run_controller`)."""
    try:
        applied = _until_done(
            stop, f"apply {decision.event_id}", lambda: controller.apply(decision), backoff_s
        )
    except ModelcanaryError as exc:
        log.error("decision %s cannot be applied, skipped: %s", decision.event_id, exc)
        return Applied(decision, False, None, str(exc))
    if applied is None:
        return None
    if applied.applied:
        log.info("applied %s: %s", decision.action.value, applied.note)
    rollout = applied.rollout
    run_id = None
    if rollout is not None and (applied.applied or decision.action is Action.HOLD):
        html = drift_reports.pop(decision.event_id, None) if drift_reports is not None else None
        try:
            run_id = _until_done(
                stop,
                f"record {decision.event_id}",
                lambda: audit.record(
                    decision,
                    controller.store.load_policy(decision.model),
                    applied.applied,
                    rollout.champion_version,
                    rollout.challenger_version,
                    artifacts={"drift.html": html} if html else None,
                ),
                backoff_s,
            )
        except ModelcanaryError as exc:
            log.error("decision %s applied but not recorded in MLflow: %s", decision.event_id, exc)
    if run_id is not None and applied.applied and decision.action is not Action.HOLD:
        reports.submit(decision.rollout_id, run_id, decision.action.value)
    if applied.applied:
        notifier.notify(decision)
    return applied


def run_controller(
    settings: Settings,
    stop: threading.Event,
    retry_backoff_s: float = 1.0,
    on_applied: Callable[[Applied], None] | None = None,
    judge: bool = True,
    judge_interval_s: float = 1.0,
) -> None:
    """Judge (in a thread) and apply decisions from the decisions topic until ``stop``.

    Per decision, in this order: 1. apply it to MLflow (:meth:`Controller.apply`, which
    writes the rollout tag last); 2. record it as an MLflow run (idempotent by event id);
    3. queue its evaluation report (:class:`ReportWriter`, for a decision that moved the
    rollout); 4. queue the webhook notification (never blocks). Offsets are committed only after
    steps 1-2 for every record of the batch, so a crash re-reads the decision: step 1 then
    finds the rollout already moved and applies nothing, step 2 finds the run. While
    MLflow is unreachable, the same step is retried with backoff and nothing after it
    is read.
    """
    bootstrap = settings.resolved_kafka_bootstrap()
    ensure_topics(bootstrap, settings.topics.all(), settings.partitions)
    registry = Registry(settings.resolved_mlflow_uri())
    controller = Controller(registry)
    audit = AuditLog(registry)
    notifier = WebhookNotifier(settings.webhook_urls)
    publisher = EventPublisher(bootstrap, client_id="modelcanary-controller")
    reports = ReportWriter(Registry(settings.resolved_mlflow_uri()))  # its own client
    reports.start()
    judge_thread = JudgeThread(settings, publisher, stop, judge_interval_s) if judge else None
    if judge_thread is not None:
        judge_thread.start()
    consumer = RecordConsumer(
        bootstrap,
        [settings.topics.decisions],
        group_id=f"{settings.topics.prefix}.controller",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
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
                            record.topic,
                            record.value or b"",
                            str(exc),
                            record.key,
                            partition=record.partition,
                            offset=record.offset,
                        ),
                    )
                    continue
                applied = _handle_decision(
                    decision,
                    controller,
                    audit,
                    notifier,
                    reports,
                    stop,
                    retry_backoff_s,
                    judge_thread.loop.drift_reports if judge_thread is not None else None,
                )
                if applied is None:
                    return
                if on_applied is not None:
                    on_applied(applied)
            consumer.commit()
    finally:
        stop.set()
        if judge_thread is not None:
            judge_thread.join(timeout=10)
        consumer.close()
        reports.close()
        notifier.close()
        publisher.flush()
        publisher.close()
