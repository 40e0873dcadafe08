"""The serving router: which version answers a request, and the events every model call emits.

It holds an immutable :class:`ServingSnapshot` (loaded models + routing table + rollout
label) that :meth:`ModelRouter.reconcile` rebuilds from MLflow and swaps in one
assignment, so a request always sees one consistent split. Reconciling happens every
``reconcile_interval_s`` on a background thread, and more often for a few seconds after
a decision arrives (:meth:`ModelRouter.follow`).

Order of work for one request (:meth:`ModelRouter.predict`):

1. validate the features against the champion's signature (4xx naming the field);
2. route by the unit id (else the request id) with the rollout's salted hash;
3. canary request for the challenger: call it on a thread of a small pool, waiting at
   most ``challenger_timeout_s`` (see :meth:`ModelRouter._guarded`). An exception, a
   timeout, or every thread being busy records the challenger's error event
   (``served=false``) and falls through to 4 — a challenger never fails a user and
   never delays them by more than the timeout;
4. otherwise call the champion inline (it is what the request would cost without
   modelcanary) and record its event;
5. shadow: hand a mirrored copy to the challenger pool once the request's coroutine has
   finished, i.e. after the answer has been sent (see :meth:`ModelRouter._mirror_later`);
   its event (or error event: exception, timeout, busy) is recorded from that thread.

Event publishing only appends to the publisher's queue: it never waits for Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from modelcanary.errors import (
    InputRejectedError,
    InvalidRequestError,
    NotReadyError,
    PredictionError,
)
from modelcanary.events import Arm, DecisionEvent, Mode, OutcomeEvent, PredictionEvent
from modelcanary.rollout_store import ModelSnapshot
from modelcanary.routing import RoutingTable
from modelcanary.serving_metrics import CallObserver, NoMetrics
from modelcanary.validation import InputSchema

__all__ = [
    "Answer",
    "BatchRow",
    "InvalidRequestError",
    "ModelRouter",
    "NotReadyError",
    "ServingSnapshot",
]

log = logging.getLogger(__name__)

FOLLOW_POLL_S = 0.1
FOLLOW_MAX_S = 3.0
#: How long the event loop blocks on a canary challenger call before awaiting it instead.
INLINE_WAIT_S = 0.005


def new_request_id() -> str:
    """32 random hex digits: as unique as a UUID4's hex, at a fifth of the cost."""
    return os.urandom(16).hex()


class Predictor(Protocol):
    version: str
    feature_names: list[str]
    schema: InputSchema

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, float | None]]: ...


class Publisher(Protocol):
    def publish(self, topic: str, event: Any) -> None: ...


@dataclass(frozen=True)
class ServingSnapshot:
    champion: Predictor | None = None
    challenger: Predictor | None = None
    table: RoutingTable = field(default_factory=RoutingTable)
    loaded_at: float = 0.0
    rollout_id: str | None = None
    rollout_label: str | None = None


@dataclass(frozen=True)
class Answer:
    request_id: str
    prediction: Any
    score: float | None
    version: str
    arm: Arm


@dataclass(frozen=True)
class BatchRow:
    """One row of a batch request."""

    features: dict[str, Any]
    request_id: str | None = None
    unit_id: str | None = None


@dataclass(slots=True)
class _Call:
    """The result of calling one model version on some rows (not frozen: built per request)."""

    outputs: list[tuple[Any, float | None]] | None
    latency_ms: float
    error: str | None = None
    error_kind: str | None = None  # exception | timeout | overloaded
    value_error: bool = False  # the model raised ValueError: it rejects these values


class ModelRouter:
    def __init__(
        self,
        model: str,
        predictions_topic: str,
        outcomes_topic: str,
        publisher: Publisher,
        read_snapshot: Callable[[], ModelSnapshot],
        load_predictor: Callable[[str], Predictor],
        reconcile_interval_s: float = 1.0,
        log_features: bool = True,
        *,
        challenger_timeout_s: float = 0.2,
        challenger_threads: int = 4,
        inline_wait_s: float = INLINE_WAIT_S,
        observer: CallObserver | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.publisher = publisher
        self._read_snapshot = read_snapshot
        self._load_predictor = load_predictor
        self.reconcile_interval_s = reconcile_interval_s
        self.log_features = log_features
        self.challenger_timeout_s = challenger_timeout_s
        self.inline_wait_s = min(inline_wait_s, challenger_timeout_s)
        self.observer: CallObserver = observer or NoMetrics()
        self._on_tick = on_tick
        self.snapshot = ServingSnapshot()
        self.last_reconcile_error: str | None = None
        self._cache: dict[str, Predictor] = {}
        self._reconcile_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(challenger_threads, thread_name_prefix="challenger")
        # Calls handed to the pool and not finished; above this the challenger is "busy".
        self._max_pending = challenger_threads
        self._pending = 0
        self._pending_lock = threading.Lock()

    # -- control plane -------------------------------------------------------------
    def reconcile(self) -> ServingSnapshot:
        """Re-read aliases and rollout from the registry; load new versions; swap atomically."""
        with self._reconcile_lock:
            state = self._read_snapshot()
            champion = self._predictor(state.champion_version)
            challenger = None
            table = RoutingTable()
            rollout = state.rollout
            if (
                rollout is not None
                and rollout.routes_traffic
                and state.challenger_version is not None
                and str(state.challenger_version) == rollout.challenger_version
            ):
                challenger = self._predictor(state.challenger_version)
                table = RoutingTable(
                    rollout_id=rollout.rollout_id,
                    mode=rollout.mode,
                    traffic_fraction=rollout.traffic_fraction,
                    step=rollout.step,
                )
            self.snapshot = ServingSnapshot(
                champion,
                challenger,
                table,
                time.time(),
                rollout.rollout_id if rollout else None,
                rollout.label if rollout else None,
            )
            self._cache = {v: p for v, p in self._cache.items() if p in (champion, challenger)}
            return self.snapshot

    def _predictor(self, version: str | None) -> Predictor | None:
        if version is None:
            return None
        version = str(version)
        if version not in self._cache:
            self._cache[version] = self._load_predictor(version)
            log.info("loaded %s version %s", self.model, version)
        return self._cache[version]

    def _try_reconcile(self) -> None:
        try:
            self.reconcile()
            self.last_reconcile_error = None
        except Exception as exc:  # keep serving the last known split
            self.last_reconcile_error = str(exc)
            log.warning("reconcile failed, serving the last known split: %s", exc)

    def start(self) -> None:
        self._try_reconcile()
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.reconcile_interval_s):
            self._try_reconcile()
            if self._on_tick is not None:
                try:
                    self._on_tick()
                except Exception:
                    log.exception("periodic hook failed")

    def follow(
        self, decision: DecisionEvent, poll_s: float = FOLLOW_POLL_S, max_s: float = FOLLOW_MAX_S
    ) -> bool:
        """Re-read MLflow every ``poll_s`` until the rollout reflects ``decision``.

        The controller writes MLflow *after* it reads the decision, so the change lands a
        moment after the decision is seen. Stops as soon as the rollout's label equals
        ``decision.to_state`` with the decision's traffic fraction (a set_traffic keeps the
        label), or, with no ``to_state``, leaves ``from_state``; or another rollout has
        started; else after ``max_s``. Returns whether it got there.
        """
        deadline = time.monotonic() + max_s
        while not self._stop.is_set():
            self._try_reconcile()
            snap = self.snapshot
            if snap.rollout_id != decision.rollout_id or (
                snap.rollout_label == decision.to_state
                and (
                    not snap.table.active
                    or snap.table.traffic_fraction == decision.traffic_fraction
                )
                if decision.to_state
                else snap.rollout_label != decision.from_state
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            self._stop.wait(poll_s)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- model calls ------------------------------------------------------------------
    def _inline(self, predictor: Predictor, rows: Sequence[dict[str, Any]]) -> _Call:
        started = time.perf_counter()
        try:
            outputs = predictor.predict(rows)
        except Exception as exc:
            latency = (time.perf_counter() - started) * 1000.0
            error = f"{type(exc).__name__}: {exc}"[:200]
            return _Call(None, latency, error, "exception", isinstance(exc, ValueError))
        return _Call(outputs, (time.perf_counter() - started) * 1000.0)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any] | None:
        """Run ``fn`` on a challenger thread, or None if every thread is busy."""
        with self._pending_lock:
            if self._pending >= self._max_pending:
                return None
            self._pending += 1
        try:
            future = self._pool.submit(fn, *args)
        except RuntimeError:  # shut down
            self._release()
            return None
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: object = None) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _busy(self) -> _Call:
        return _Call(
            None, 0.0, f"challenger busy: {self._max_pending} calls in progress", "overloaded"
        )

    def _timeout(self) -> _Call:
        ms = self.challenger_timeout_s * 1000.0
        return _Call(None, ms, f"timeout: no answer within {ms:.0f} ms", "timeout")

    async def _guarded(self, predictor: Predictor, rows: Sequence[dict[str, Any]]) -> _Call:
        """Call ``predictor`` on a challenger thread; never raises, never waits past the timeout.

        The event loop first simply waits for the thread, for at most ``inline_wait_s``,
        as it would wait for a champion called inline: a challenger that answers in time
        then costs what the champion would have cost. Letting the loop serve other requests
        meanwhile instead makes the two threads trade the GIL at every release inside
        numpy and pandas, which cost ~10% of throughput in ``serving_overhead.py``. A slower
        call is awaited without blocking the loop, up to the timeout.
        """
        future = self._submit(self._inline, predictor, rows)
        if future is None:
            return self._busy()
        try:
            return future.result(timeout=self.inline_wait_s)
        except FutureTimeout:
            pass
        remaining = max(0.0, self.challenger_timeout_s - self.inline_wait_s)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), remaining)
        except TimeoutError:
            future.cancel()  # if it has not started; a running call is abandoned
            return self._timeout()

    def _mirror_later(
        self,
        predictor: Predictor,
        rows: Sequence[dict[str, Any]],
        ids: Sequence[tuple[str, str | None]],
        table: RoutingTable,
    ) -> None:
        """:meth:`_mirror` as soon as the event loop is free again.

        The loop runs the callback when the coroutine answering this request suspends or
        ends, which under BentoML is after the response has been written. Handed to the
        pool at once, the challenger's thread could take the GIL (for up to the 5 ms
        switch interval) from the answer's own serialisation and sending.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop: nothing to wait for
            self._mirror(predictor, rows, ids, table)
            return
        loop.call_soon(self._mirror, predictor, rows, ids, table)

    def _mirror(
        self,
        predictor: Predictor,
        rows: Sequence[dict[str, Any]],
        ids: Sequence[tuple[str, str | None]],
        table: RoutingTable,
    ) -> None:
        """Shadow: call the challenger on a pool thread, off the request path."""

        def run() -> None:
            call = self._inline(predictor, rows)
            if call.error is None and call.latency_ms > self.challenger_timeout_s * 1000.0:
                call = self._timeout()
            self._record(predictor, Arm.CHALLENGER, Mode.SHADOW, False, rows, ids, table, call)

        if self._submit(run) is None:
            self._record(
                predictor, Arm.CHALLENGER, Mode.SHADOW, False, rows, ids, table, self._busy()
            )

    def _record(
        self,
        predictor: Predictor,
        arm: Arm,
        mode: Mode,
        served: bool,
        rows: Sequence[dict[str, Any]],
        ids: Sequence[tuple[str, str | None]],
        table: RoutingTable,
        call: _Call,
    ) -> None:
        """One prediction event per row, and the call's metrics."""
        self._observe(predictor, arm, mode, call)
        outputs = call.outputs
        for index, (request_id, unit_id) in enumerate(ids):
            prediction, score = outputs[index] if outputs is not None else (None, None)
            self._publish(
                predictor, arm, mode, served, rows[index], request_id, unit_id, table, call,
                prediction, score,
            )  # fmt: skip

    def _observe(self, predictor: Predictor, arm: Arm, mode: Mode, call: _Call) -> None:
        if arm is Arm.CHAMPION:
            role = "champion"
        else:
            role = "shadow" if mode is Mode.SHADOW else "challenger"
        self.observer.model_call(predictor.version, role, call.latency_ms / 1000.0, call.error_kind)

    def _publish(
        self,
        predictor: Predictor,
        arm: Arm,
        mode: Mode,
        served: bool,
        features: dict[str, Any],
        request_id: str,
        unit_id: str | None,
        table: RoutingTable,
        call: _Call,
        prediction: Any,
        score: float | None,
    ) -> None:
        rollout_id = table.rollout_id
        self.publisher.publish(
            self.predictions_topic,
            PredictionEvent(
                model=self.model,
                request_id=request_id,
                version=predictor.version,
                arm=arm,
                mode=mode,
                served=served and call.error is None,
                prediction=prediction,
                score=score,
                latency_ms=call.latency_ms,
                error=call.error,
                unit_id=unit_id,
                rollout_id=rollout_id,
                step=table.step,
                traffic_fraction=table.traffic_fraction if rollout_id is not None else None,
                features=features if self.log_features else None,
            ),
        )

    # -- data plane -----------------------------------------------------------------
    def _champion(self, snap: ServingSnapshot) -> Predictor:
        if snap.champion is None:
            raise NotReadyError(
                f"no champion of {self.model} is loaded yet: register a first version "
                "(pipelines/train.py) and wait a second"
            )
        return snap.champion

    def _champion_failed(self, champion: Predictor, call: _Call) -> NoReturn:
        if call.value_error:
            raise InputRejectedError(
                f"champion version {champion.version} cannot score these values: {call.error}"
            )
        raise PredictionError(f"champion version {champion.version} failed: {call.error}")

    def _validate(self, predictor: Predictor, features: Any, where: str) -> None:
        try:
            predictor.schema.validate(features, where)
        except InvalidRequestError:
            self.observer.invalid_request()
            raise

    async def predict(
        self, features: dict[str, Any], request_id: str | None = None, unit_id: str | None = None
    ) -> Answer:
        """Answer one request (see the module docstring for the order of work).

        Every request pays for this path, so it is :meth:`predict_batch` for one row with
        the generic steps inlined: one metrics update and one event, no per-row loops.
        """
        snap = self.snapshot
        champion = self._champion(snap)
        self._validate(champion, features, "features")
        request_id = request_id or new_request_id()
        table = snap.table
        challenger = snap.challenger
        mirror = False
        if challenger is not None and table.active:
            route = table.route(unit_id or request_id)
            if route.served_by is Arm.CHALLENGER:
                call = await self._guarded(challenger, (features,))
                self._observe(challenger, Arm.CHALLENGER, Mode.CANARY, call)
                prediction, score = call.outputs[0] if call.outputs is not None else (None, None)
                self._publish(
                    challenger, Arm.CHALLENGER, Mode.CANARY, True, features, request_id,
                    unit_id, table, call, prediction, score,
                )  # fmt: skip
                if call.outputs is not None:
                    return Answer(request_id, prediction, score, challenger.version, Arm.CHALLENGER)
            mirror = route.mirror_to_challenger
        call = self._inline(champion, (features,))
        self._observe(champion, Arm.CHAMPION, table.mode, call)
        prediction, score = call.outputs[0] if call.outputs is not None else (None, None)
        self._publish(
            champion, Arm.CHAMPION, table.mode, True, features, request_id, unit_id, table,
            call, prediction, score,
        )  # fmt: skip
        if call.outputs is None:
            self._champion_failed(champion, call)
        if mirror and challenger is not None:
            self._mirror_later(challenger, (features,), ((request_id, unit_id),), table)
        return Answer(request_id, prediction, score, champion.version, Arm.CHAMPION)

    async def predict_batch(self, rows: Sequence[BatchRow]) -> list[Answer]:
        """Answer many rows at once; each row is routed by its own unit or request id.

        One model call per arm: the challenger's rows together (with the same timeout and
        fallback as :meth:`predict`), then the champion's. Every row gets its own event;
        its ``latency_ms`` is that of the batched call it was part of.
        """
        snap = self.snapshot
        champion = self._champion(snap)
        seen: dict[str, int] = {}
        for index, row in enumerate(rows):
            self._validate(champion, row.features, f"rows[{index}].features")
            if row.request_id is not None:
                if row.request_id in seen:
                    raise InvalidRequestError(
                        f"rows[{index}].request_id: {row.request_id!r} repeats "
                        f"rows[{seen[row.request_id]}].request_id"
                    )
                seen[row.request_id] = index
        table = snap.table
        ids = [(row.request_id or new_request_id(), row.unit_id) for row in rows]
        routes = [table.route(unit_id or request_id) for request_id, unit_id in ids]
        answers: list[Answer | None] = [None] * len(rows)
        challenger = snap.challenger
        if challenger is not None:
            picked = [i for i, r in enumerate(routes) if r.served_by is Arm.CHALLENGER]
            if picked:
                sub_rows = [rows[i].features for i in picked]
                sub_ids = [ids[i] for i in picked]
                call = await self._guarded(challenger, sub_rows)
                self._record(
                    challenger, Arm.CHALLENGER, Mode.CANARY, True, sub_rows, sub_ids, table, call
                )
                if call.outputs is not None:
                    for i, (prediction, score) in zip(picked, call.outputs, strict=True):
                        answers[i] = Answer(
                            ids[i][0], prediction, score, challenger.version, Arm.CHALLENGER
                        )
        rest = [i for i, answer in enumerate(answers) if answer is None]
        if rest:
            sub_rows = [rows[i].features for i in rest]
            sub_ids = [ids[i] for i in rest]
            call = self._inline(champion, sub_rows)
            self._record(champion, Arm.CHAMPION, table.mode, True, sub_rows, sub_ids, table, call)
            if call.outputs is None:
                self._champion_failed(champion, call)
            for i, (prediction, score) in zip(rest, call.outputs, strict=True):
                answers[i] = Answer(ids[i][0], prediction, score, champion.version, Arm.CHAMPION)
            mirrored = [i for i in rest if routes[i].mirror_to_challenger]
            if mirrored and challenger is not None:
                self._mirror_later(
                    challenger,
                    [rows[i].features for i in mirrored],
                    [ids[i] for i in mirrored],
                    table,
                )
        return [answer for answer in answers if answer is not None]

    def feedback(
        self, request_id: str, label: Any = None, kpis: dict[str, float] | None = None
    ) -> OutcomeEvent:
        if label is None and not kpis:
            raise InvalidRequestError("give a label and/or at least one KPI value")
        event = OutcomeEvent(
            model=self.model, request_id=request_id, label=label, kpis=dict(kpis or {})
        )
        self.publisher.publish(self.outcomes_topic, event)
        return event

    # -- health -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        snap = self.snapshot
        table = snap.table
        stats = getattr(self.publisher, "stats", None)
        events = stats() if callable(stats) else None
        kafka = "ok" if events is None else str(events.state)
        problems = []
        if snap.champion is None:
            problems.append("no champion loaded")
        if self.last_reconcile_error:
            problems.append("cannot read MLflow")
        if kafka != "ok":
            problems.append("Kafka unavailable: spooling events")
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "model": self.model,
            "champion_version": snap.champion.version if snap.champion else None,
            "challenger_version": snap.challenger.version if snap.challenger else None,
            "rollout_id": table.rollout_id,
            "rollout_label": snap.rollout_label,
            "mode": table.mode.value,
            "traffic_fraction": table.traffic_fraction,
            "step": table.step,
            "reconciled_at": snap.loaded_at,
            "reconcile_error": self.last_reconcile_error,
            "kafka": kafka,
            "spool_depth": events.spool_depth if events else 0,
            "events_dropped": events.dropped if events else 0,
            "challenger_timeout_ms": self.challenger_timeout_s * 1000.0,
            "worker_pid": os.getpid(),
        }
