"""The serving router: which version answers a request, and the events every model call emits.

It holds an immutable :class:`ServingSnapshot` (loaded models + routing table + rollout
label) that :meth:`ModelRouter.reconcile` rebuilds from MLflow and swaps in one
assignment, so a request always sees one consistent split. Reconciling happens every
``reconcile_interval_s`` on a background thread, and more often for a few seconds after
a decision arrives (:meth:`ModelRouter.follow`).

Order of work for one request (:meth:`ModelRouter.predict`):

1. validate the features against the champion's signature (4xx naming the field);
2. route by the unit id (else the request id) with the rollout's salted hash;
3. canary request for the challenger: call it on a thread of a small pool, or, once it
   has been fast, on the event loop's own thread under a ``SIGALRM`` timer (cheaper; see
   :meth:`ModelRouter._guarded` and :class:`InlineTimer`), waiting at most
   ``challenger_timeout_s``. An exception, a timeout, or every thread being busy
   records the challenger's error event (``served=false``) and falls through to 4 — a
   challenger never fails a user and never delays them by more than the timeout;
4. otherwise call the champion inline (it is what the request would cost without
   modelcanary) and record its event;
5. shadow: hand a mirrored copy to the challenger pool once the request's coroutine has
   finished, i.e. after the answer has been sent (see :meth:`ModelRouter._mirror_later`);
   its event (or error event: exception, timeout, busy) is recorded from that thread.

A prediction event is handed to the publisher as a tuple of its values: the publisher's
sender thread encodes it (:mod:`modelcanary.prediction_bytes`) and sends it, so
publishing never waits for Kafka, nor for the encoding.
"""

from __future__ import annotations

import _signal
import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn, Protocol

from modelcanary.errors import (
    InputRejectedError,
    InvalidRequestError,
    NotReadyError,
    PredictionError,
)
from modelcanary.events import Arm, DecisionEvent, Mode, OutcomeEvent
from modelcanary.prediction_bytes import PendingPrediction, PredictionEncoder
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
_now = time.time  # the time of each prediction event

FOLLOW_POLL_S = 0.1
FOLLOW_MAX_S = 3.0
#: How long a canary challenger call may block the event loop: called inline, the budget
#: of its timer; on a pool thread, how long the loop waits before awaiting it instead.
INLINE_WAIT_S = 0.005
#: A challenger is called inline after this many calls under half the budget (at first;
#: each time it then runs over the budget, twice as many, up to MAX_FAST_CALLS).
FAST_CALLS = 8
MAX_FAST_CALLS = 4096
#: Inline calls in a row after which the number of fast calls wanted halves again.
FORGIVE_AFTER = 1024
#: An inline call that waits (not computing) is interrupted after this many budgets.
INLINE_CAP_BUDGETS = 4


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

    def publish_deferred(
        self, topic: str, key: str, encode: Callable[[Any], bytes | None], data: Any
    ) -> None: ...


@dataclass(frozen=True)
class ServingSnapshot:
    champion: Predictor | None = None
    challenger: Predictor | None = None
    table: RoutingTable = field(default_factory=RoutingTable)
    loaded_at: float = 0.0
    rollout_id: str | None = None
    rollout_label: str | None = None


class Answer(NamedTuple):
    """What the user gets (a tuple: made for every request, cheaper than a frozen dataclass).

    The request path makes it with ``_new_tuple(Answer, (...))``: a named tuple's own
    constructor is a Python function.
    """

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


class _OverBudget(BaseException):
    """Raised into a challenger call that ran past its inline budget (see :class:`InlineTimer`).

    A ``BaseException``, so that a model's own ``except Exception`` does not swallow it.
    """


_UNSET: Any = object()
_new_tuple = tuple.__new__


class InlineTimer:
    """Call a function on this thread, interrupted by ``SIGALRM`` once it has run too long.

    Handing a challenger call to a pool thread, only so that it can be timed out, costs
    more CPU than the call itself (the thread's wake-up and the GIL's hand-over back and
    forth: 0.75-0.95 ms of CPU for a 0.55 ms model call in ``serving_overhead.py``). A
    challenger that has been fast is therefore called on the event loop's own thread,
    under a one-shot ``ITIMER_REAL`` timer whose handler raises :class:`_OverBudget`
    inside the model code when the call has used ``budget_s`` of this thread's CPU time,
    or ``cap_s`` of wall-clock time, whichever comes first. The budget is CPU time because
    a thread preempted by other processes, or waiting for the GIL, is not slow itself (and
    the loop, on the same thread, could not have run meanwhile either): timed by the wall
    clock alone, a busy machine interrupted fast calls and wasted their work. The cap
    bounds a call that waits without computing (I/O, a sleep, a lock).

    Limits, and why the router still falls back to the pool: Python runs signal handlers
    on the main thread only, between bytecodes; so this works only when the event loop
    runs on the main thread and SIGALRM is not used by anything else in the process, and
    a model stuck in C code that releases the GIL (a long BLAS call) is interrupted only
    when it returns to Python — the loop is then blocked that long, once, before the
    router moves the challenger back to the pool. The exception is raised at an arbitrary
    point of the model's Python code; ``with`` blocks and ``finally`` clauses run as for
    any exception.

    The handler raises only while armed: it is disarmed before the timer is cleared, and
    a signal that fires just after the call returned (its handler then runs inside the
    ``finally``) is recognised by the result already being there.
    """

    #: Shortest re-arm: below this the call is as good as over its budget.
    MIN_REARM_S = 0.0005

    def __init__(self) -> None:
        self._armed = False
        self._installed = False
        self._handler = self._on_alarm  # one bound method: what getsignal gives back
        self._main = threading.main_thread().ident
        self._budget_s = 0.0
        self._cpu_started = 0.0
        self._deadline = 0.0

    def usable(self) -> bool:
        """Whether calls on *this* thread can be timed out (installs the handler once)."""
        if threading.get_ident() != self._main:
            return False
        if not self._installed:
            if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
                return False  # someone else's alarm: leave it alone
            signal.signal(signal.SIGALRM, self._handler)
            self._installed = True
        # _signal's getsignal: signal's wraps it to look for an enum member, which fails
        # (an exception raised and caught) for a method, at 15 times the cost.
        return _signal.getsignal(signal.SIGALRM) is self._handler

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        if not self._armed:
            return
        # Runs on the main thread, i.e. the thread of the call: thread_time is the call's.
        left = min(
            self._budget_s - (time.thread_time() - self._cpu_started),
            self._deadline - time.perf_counter(),
        )
        if left >= self.MIN_REARM_S:  # preempted or waiting: not over its own budget yet
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        self._armed = False
        raise _OverBudget

    def call(self, budget_s: float, cap_s: float, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or :data:`_UNSET` if interrupted (see the class docstring)."""
        result = _UNSET
        try:
            try:
                self._budget_s = budget_s
                self._cpu_started = time.thread_time()
                self._deadline = time.perf_counter() + cap_s
                self._armed = True
                signal.setitimer(signal.ITIMER_REAL, min(budget_s, cap_s))
                result = fn(*args)
            finally:
                self._armed = False
                signal.setitimer(signal.ITIMER_REAL, 0.0)
        except _OverBudget:
            pass  # over budget, or (result set) the alarm rang just as it returned
        return result


#: The process's one timer: SIGALRM and ITIMER_REAL exist once per process.
INLINE_TIMER = InlineTimer()


@dataclass(slots=True)
class _Pace:
    """How one challenger version has been doing: whether to call it inline (see ``_guarded``)."""

    needed: int = FAST_CALLS  # fast calls on the pool wanted before calling it inline
    fast: int = 0  # fast calls on the pool since it was last sent there
    inline: bool = False
    inline_calls: int = 0  # inline calls since then

    def pooled(self, latency_ms: float, budget_ms: float) -> None:
        if latency_ms > budget_ms:
            self.fast = 0
        elif latency_ms <= budget_ms / 2.0:
            self.fast += 1
            if self.fast >= self.needed:
                self.inline, self.inline_calls = True, 0
        # between half the budget and the budget (a busy machine): neither

    def answered_inline(self) -> None:
        self.inline_calls += 1
        if self.inline_calls % FORGIVE_AFTER == 0:
            self.needed = max(FAST_CALLS, self.needed // 2)

    def over_budget(self) -> None:
        self.inline, self.fast = False, 0
        self.needed = min(MAX_FAST_CALLS, self.needed * 2)


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
        inline_calls: bool = True,
        observer: CallObserver | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.publisher = publisher
        self._encode_event = PredictionEncoder(model).encode
        self._read_snapshot = read_snapshot
        self._load_predictor = load_predictor
        self.reconcile_interval_s = reconcile_interval_s
        self.log_features = log_features
        self.challenger_timeout_s = challenger_timeout_s
        self.inline_wait_s = min(inline_wait_s, challenger_timeout_s)
        # Challenger calls on the loop's thread under a timer, for a challenger that has
        # been fast (see _guarded): one _Pace per challenger version.
        self._timer = INLINE_TIMER if inline_calls and self.inline_wait_s > 0 else None
        self._paces: dict[str, _Pace] = {}
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
        """Call the challenger ``predictor``; never raises, never waits past the timeout.

        A challenger call blocks the event loop at most ``inline_wait_s`` (5 ms) of its
        own computing, and at most :data:`INLINE_CAP_BUDGETS` times that (or the timeout,
        if shorter) in all:

        - one row, for a challenger whose recent calls were fast (:class:`_Pace`: at
          first :data:`FAST_CALLS` calls under half of that, none over it since), is
          scored on the loop's own thread under an :class:`InlineTimer`. A call that runs
          over is interrupted and run again on a pool thread for the rest of the timeout
          (its event's latency counts both), and the challenger goes back to the pool
          until it has been fast again, for twice as many calls each time: a challenger
          that has turned slow soon stays on the pool;
        - anything else runs on a pool thread (:meth:`_pooled`), which the loop waits
          for, blocked, for at most ``inline_wait_s`` of wall-clock time.
        """
        timer = self._timer
        if timer is None or len(rows) != 1:
            return await self._pooled(predictor, rows, self.challenger_timeout_s)
        pace = self._paces.get(predictor.version)
        if pace is None:
            if len(self._paces) > 16:
                self._paces.clear()  # versions come and go: keep this small
            pace = self._paces[predictor.version] = _Pace()
        budget_ms = self.inline_wait_s * 1000.0
        if not pace.inline or not timer.usable():
            call = await self._pooled(predictor, rows, self.challenger_timeout_s)
            if call.error_kind != "overloaded":
                pace.pooled(call.latency_ms, budget_ms)
            return call
        started = time.perf_counter()
        cap_s = min(self.inline_wait_s * INLINE_CAP_BUDGETS, self.challenger_timeout_s)
        call = timer.call(self.inline_wait_s, cap_s, self._inline, predictor, rows)
        if call is not _UNSET:
            pace.answered_inline()
            return call
        pace.over_budget()
        spent = time.perf_counter() - started
        log.info(
            "challenger %s ran over its %.0f ms inline budget: back to its thread for %d calls",
            predictor.version,
            budget_ms,
            pace.needed,
        )
        call = await self._pooled(predictor, rows, max(0.0, self.challenger_timeout_s - spent))
        if call.error_kind != "timeout":
            call.latency_ms += spent * 1000.0
        return call

    async def _pooled(
        self, predictor: Predictor, rows: Sequence[dict[str, Any]], timeout_s: float
    ) -> _Call:
        """Call ``predictor`` on a challenger thread, for at most ``timeout_s``.

        The event loop first simply waits for the thread, for at most ``inline_wait_s``,
        as it would wait for a champion called inline. Letting the loop serve other
        requests meanwhile instead makes the two threads trade the GIL at every release
        inside numpy and pandas, which cost ~10% of throughput in ``serving_overhead.py``.
        A slower call is awaited without blocking the loop, up to the timeout.
        """
        future = self._submit(self._inline, predictor, rows)
        if future is None:
            return self._busy()
        wait = min(self.inline_wait_s, timeout_s)
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            pass
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s - wait)
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
        """Hand the event's values to the publisher: its sender encodes them (see
        :mod:`modelcanary.prediction_bytes`), so ``features`` must not change afterwards."""
        pending: PendingPrediction = (
            predictor.version, arm, mode, table, request_id, served and call.error is None,
            prediction, score, call.latency_ms, call.error, unit_id,
            features if self.log_features else None, _now(),
        )  # fmt: skip
        self.publisher.publish_deferred(
            self.predictions_topic, request_id, self._encode_event, pending
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
        """Answer one request (see the module docstring for the order of work)."""
        answer = self.serve(features, request_id, unit_id)
        if type(answer) is not Answer:
            answer = await answer
        return answer

    def serve(
        self, features: dict[str, Any], request_id: str | None = None, unit_id: str | None = None
    ) -> Answer | Coroutine[Any, Any, Answer]:
        """:meth:`predict` without a coroutine of its own when the champion answers.

        Returns the :class:`Answer`, or for a request routed to the challenger the
        coroutine that answers it (await it). Every request pays for this path, so it is
        :meth:`predict_batch` for one row with the generic steps inlined: one metrics update
        and one event, no per-row loops, and no coroutine where none is needed (each of the
        ~250 exceptions sklearn and pandas raise and catch in a prediction walks the chain
        of running coroutines).
        """
        # Every Python call on this path costs every request (~200 instructions, and its
        # code must be brought back into the caches): _champion and _validate are written
        # out here, _observe in _champion_answer (shared with the challenger's fallback).
        snap = self.snapshot
        champion = snap.champion
        if champion is None:
            champion = self._champion(snap)  # raises NotReadyError
        try:
            champion.schema.validate(features, "features")
        except InvalidRequestError:
            self.observer.invalid_request()
            raise
        request_id = request_id or new_request_id()
        table = snap.table
        challenger = snap.challenger
        mirror = False
        if challenger is not None and table.active:
            route = table.route(unit_id or request_id)
            if route.served_by is Arm.CHALLENGER:
                return self._challenger_answer(
                    champion, challenger, table, features, request_id, unit_id
                )
            mirror = route.mirror_to_challenger
        return self._champion_answer(
            champion, challenger if mirror else None, table, features, request_id, unit_id
        )

    async def _challenger_answer(
        self,
        champion: Predictor,
        challenger: Predictor,
        table: RoutingTable,
        features: dict[str, Any],
        request_id: str,
        unit_id: str | None,
    ) -> Answer:
        """The challenger's answer, or the champion's if the challenger fails or is late."""
        call = await self._guarded(challenger, (features,))
        self._observe(challenger, Arm.CHALLENGER, Mode.CANARY, call)
        prediction, score = call.outputs[0] if call.outputs is not None else (None, None)
        self._publish(
            challenger, Arm.CHALLENGER, Mode.CANARY, True, features, request_id, unit_id,
            table, call, prediction, score,
        )  # fmt: skip
        if call.outputs is not None:
            return _new_tuple(
                Answer, (request_id, prediction, score, challenger.version, Arm.CHALLENGER)
            )
        return self._champion_answer(champion, None, table, features, request_id, unit_id)

    def _champion_answer(
        self,
        champion: Predictor,
        mirror_to: Predictor | None,
        table: RoutingTable,
        features: dict[str, Any],
        request_id: str,
        unit_id: str | None,
    ) -> Answer:
        call = self._inline(champion, (features,))
        self.observer.model_call(
            champion.version, "champion", call.latency_ms / 1000.0, call.error_kind
        )
        prediction, score = call.outputs[0] if call.outputs is not None else (None, None)
        self._publish(
            champion, Arm.CHAMPION, table.mode, True, features, request_id, unit_id, table,
            call, prediction, score,
        )  # fmt: skip
        if call.outputs is None:
            self._champion_failed(champion, call)
        if mirror_to is not None:
            self._mirror_later(mirror_to, (features,), ((request_id, unit_id),), table)
        return _new_tuple(Answer, (request_id, prediction, score, champion.version, Arm.CHAMPION))

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
