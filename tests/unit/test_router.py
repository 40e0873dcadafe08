"""The router's data plane with stand-in models: challenger failures never reach users."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from modelcanary.errors import InputRejectedError, InvalidRequestError, PredictionError
from modelcanary.events import (
    Action,
    Arm,
    DecisionEvent,
    Mode,
    PredictionEvent,
    decode_prediction,
)
from modelcanary.policy import Policy, Step
from modelcanary.rollout import apply_action, new_rollout
from modelcanary.rollout_store import ModelSnapshot
from modelcanary.router import FAST_CALLS, INLINE_TIMER, BatchRow, ModelRouter, ServingSnapshot
from modelcanary.routing import RoutingTable
from modelcanary.validation import InputSchema

FEATURES = {"x": 1.0, "y": 2.0}


class StandIn:
    """A model version: answers its own version number, or fails, or is slow."""

    def __init__(self, version: str, fail: Exception | None = None, delay_s: float = 0.0):
        self.version = version
        self.feature_names = ["x", "y"]
        self.schema = InputSchema.numeric_columns(self.feature_names)
        self.fail = fail
        self.delay_s = delay_s
        self.calls = 0
        self.threads: list[int] = []

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, float | None]]:
        self.calls += 1
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [(int(self.version), 0.5) for _ in rows]


class Recorder:
    def __init__(self) -> None:
        self.events: list[PredictionEvent] = []
        self.calls: list[tuple[str, str, str | None]] = []
        self.pending: list[Any] = []  # what the router handed over
        self.dropped: list[Any] = []  # events the encoder refused
        self.lock = threading.Lock()

    def publish(self, topic: str, event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def publish_deferred(
        self, topic: str, key: str, encode: Callable[[Any], bytes | None], data: Any
    ) -> None:
        self.pending.append(data)
        value = encode(data)  # what the publisher's sender does
        if value is None:
            self.dropped.append(data)
            return
        event = decode_prediction(value)  # what a consumer of the topic reads
        assert event.key == key
        self.publish(topic, event)

    def model_call(self, version: str, role: str, latency_s: float, kind: str | None) -> None:
        with self.lock:
            self.calls.append((version, role, kind))

    def invalid_request(self) -> None:
        return None


def _router(
    champion: StandIn,
    challenger: StandIn | None,
    table: RoutingTable,
    recorder: Recorder,
    timeout_s: float = 0.2,
    threads: int = 2,
) -> ModelRouter:
    router = ModelRouter(
        "m",
        "predictions",
        "outcomes",
        recorder,
        read_snapshot=lambda: ModelSnapshot(None, None, None),
        load_predictor=lambda v: StandIn(v),
        challenger_timeout_s=timeout_s,
        challenger_threads=threads,
        observer=recorder,
    )
    router.snapshot = ServingSnapshot(champion, challenger, table)
    return router


CANARY_ALL = RoutingTable("r1", Mode.CANARY, 1.0, 0)
SHADOW_ALL = RoutingTable("r1", Mode.SHADOW, 1.0, 0)


class Opaque:
    """A prediction that is not a JSON value."""


def test_a_prediction_that_is_not_json_is_answered_and_its_event_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    champion = StandIn("1")
    opaque = Opaque()
    champion.predict = lambda rows: [(opaque, 0.5) for _ in rows]  # type: ignore[method-assign]
    router = _router(champion, None, RoutingTable(), recorder)
    answer = asyncio.run(router.predict(FEATURES, "req-1"))
    assert answer.prediction is opaque
    assert recorder.events == [] and len(recorder.dropped) == 1
    assert "dropping the prediction event of request 'req-1'" in caplog.text


def test_the_event_carries_the_time_of_the_call() -> None:
    recorder = Recorder()
    router = _router(StandIn("1"), None, RoutingTable(), recorder)
    before = time.time()
    asyncio.run(router.predict(FEATURES, "req-1"))
    after = time.time()
    [pending] = recorder.pending
    assert before <= pending[-1] <= after


def test_a_failing_canary_challenger_is_answered_by_the_champion() -> None:
    recorder = Recorder()
    router = _router(StandIn("1"), StandIn("2", fail=RuntimeError("boom")), CANARY_ALL, recorder)
    answer = asyncio.run(router.predict(FEATURES, "req-1", "user-1"))
    assert (answer.version, answer.arm) == ("1", Arm.CHAMPION)
    failed, served = recorder.events
    assert (failed.arm, failed.served) == (Arm.CHALLENGER, False)
    assert failed.error == "RuntimeError: boom"
    assert (served.arm, served.served, served.request_id) == (Arm.CHAMPION, True, "req-1")
    assert ("2", "challenger", "exception") in recorder.calls
    router.stop()


def test_serve_answers_the_champions_requests_without_a_coroutine() -> None:
    recorder = Recorder()
    router = _router(StandIn("1"), StandIn("2"), CANARY_ALL, recorder)
    router.snapshot = ServingSnapshot(StandIn("1"), StandIn("2"), RoutingTable())
    answer = router.serve(FEATURES, "req-1")  # no rollout: the champion, at once
    assert (answer.version, answer.arm) == ("1", Arm.CHAMPION)
    router.snapshot = ServingSnapshot(StandIn("1"), StandIn("2"), CANARY_ALL)
    turn = router.serve(FEATURES, "req-2")  # the challenger's turn: awaited by the caller
    assert asyncio.iscoroutine(turn)
    answer = asyncio.run(turn)
    assert (answer.version, answer.arm) == ("2", Arm.CHALLENGER)
    assert [e.request_id for e in recorder.events] == ["req-1", "req-2"]
    router.stop()


def test_a_slow_challenger_costs_at_most_the_timeout() -> None:
    recorder = Recorder()
    router = _router(StandIn("1"), StandIn("2", delay_s=1.0), CANARY_ALL, recorder, timeout_s=0.05)
    started = time.perf_counter()
    answer = asyncio.run(router.predict(FEATURES))
    assert time.perf_counter() - started < 0.5
    assert answer.version == "1"
    assert recorder.events[0].error is not None and recorder.events[0].error.startswith("timeout")
    router.stop()


def test_when_every_challenger_thread_is_stuck_users_do_not_even_wait() -> None:
    recorder = Recorder()
    slow = StandIn("2", delay_s=0.5)
    router = _router(StandIn("1"), slow, CANARY_ALL, recorder, timeout_s=0.05, threads=1)

    async def two() -> list[float]:
        await router.predict(FEATURES)  # occupies the only thread for 0.5 s
        started = time.perf_counter()
        await router.predict(FEATURES)
        return [time.perf_counter() - started]

    (second,) = asyncio.run(two())
    assert second < 0.04, "a busy challenger must not make users wait for the timeout"
    errors = [e.error for e in recorder.events if e.arm is Arm.CHALLENGER]
    assert errors[0].startswith("timeout") and errors[1].startswith("challenger busy")
    router.stop()


def test_a_failing_shadow_records_its_error_and_the_user_gets_the_champion() -> None:
    recorder = Recorder()
    router = _router(StandIn("1"), StandIn("2", fail=ValueError("bad")), SHADOW_ALL, recorder)
    answer = asyncio.run(router.predict(FEATURES, "req-9"))
    assert (answer.version, answer.arm) == ("1", Arm.CHAMPION)
    deadline = time.monotonic() + 2
    while len(recorder.events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    shadow = [e for e in recorder.events if e.arm is Arm.CHALLENGER]
    assert len(shadow) == 1 and shadow[0].mode is Mode.SHADOW and not shadow[0].served
    assert shadow[0].request_id == "req-9" and shadow[0].error == "ValueError: bad"
    assert ("2", "shadow", "exception") in recorder.calls
    router.stop()


def test_champion_failures_are_errors_and_bad_values_are_the_clients() -> None:
    recorder = Recorder()
    router = _router(StandIn("1", fail=ValueError("overflow")), None, RoutingTable(), recorder)
    with pytest.raises(InputRejectedError, match="overflow"):
        asyncio.run(router.predict(FEATURES))
    router.snapshot = ServingSnapshot(StandIn("1", fail=KeyError("x")), None, RoutingTable())
    with pytest.raises(PredictionError):
        asyncio.run(router.predict(FEATURES))
    with pytest.raises(InvalidRequestError, match=r"features\.y"):
        asyncio.run(router.predict({"x": 1.0, "y": "two"}))
    router.stop()


def test_a_batch_routes_each_row_as_a_single_call_would() -> None:
    recorder = Recorder()
    table = RoutingTable("r1", Mode.CANARY, 0.5, 0)
    router = _router(StandIn("1"), StandIn("2"), table, recorder)
    rows = [BatchRow(FEATURES, f"req-{i}", f"user-{i}") for i in range(40)]
    answers = asyncio.run(router.predict_batch(rows))
    singles = [asyncio.run(router.predict(FEATURES, f"again-{i}", f"user-{i}")) for i in range(40)]
    assert [a.version for a in answers] == [s.version for s in singles]
    assert {a.version for a in answers} == {"1", "2"}
    assert [a.request_id for a in answers] == [f"req-{i}" for i in range(40)]
    router.stop()


def test_a_batch_with_a_failing_challenger_is_answered_by_the_champion() -> None:
    recorder = Recorder()
    router = _router(StandIn("1"), StandIn("2", fail=RuntimeError("x")), CANARY_ALL, recorder)
    rows = [BatchRow(FEATURES, unit_id=f"user-{i}") for i in range(5)]
    answers = asyncio.run(router.predict_batch(rows))
    assert {(a.version, a.arm) for a in answers} == {("1", Arm.CHAMPION)}
    assert sum(1 for e in recorder.events if e.arm is Arm.CHALLENGER and e.error) == 5
    router.stop()


def test_follow_rereads_the_registry_until_the_decision_is_applied() -> None:
    policy = Policy(steps=(Step(0.1), Step(0.5)))
    first = new_rollout("m", "1", "2", policy, now=0.0)
    advanced = apply_action(first, Action.ADVANCE, policy, 1.0, "ok")
    reads = [first, first, first, advanced]

    def read() -> ModelSnapshot:
        return ModelSnapshot("1", "2", reads.pop(0) if len(reads) > 1 else reads[0])

    router = ModelRouter("m", "p", "o", Recorder(), read, lambda v: StandIn(v))
    router.reconcile()
    decision = DecisionEvent(
        model="m",
        rollout_id=first.rollout_id,
        action=Action.ADVANCE,
        from_state=first.label,
        to_state=advanced.label,
        traffic_fraction=0.5,
        reason="test",
    )
    assert router.follow(decision, poll_s=0.01, max_s=2.0)
    assert router.snapshot.rollout_label == "running:1"
    assert router.snapshot.table.traffic_fraction == 0.5
    never = dataclasses.replace(decision, to_state="promoted")
    started = time.monotonic()
    assert not router.follow(never, poll_s=0.01, max_s=0.2)
    assert time.monotonic() - started < 1.0
    router.stop()


MAIN = threading.main_thread().ident


def _warm_up(router: ModelRouter) -> list[Any]:
    """Enough fast canary calls for the challenger to be called on the loop's thread."""

    async def calls() -> list[Any]:
        return [await router.predict(FEATURES) for _ in range(FAST_CALLS + 3)]

    return asyncio.run(calls())


def test_a_fast_challenger_is_called_on_the_loops_thread_once_it_has_been_fast() -> None:
    recorder = Recorder()
    challenger = StandIn("2")
    router = _router(StandIn("1"), challenger, CANARY_ALL, recorder)
    answers = _warm_up(router)
    assert {a.version for a in answers} == {"2"}
    assert MAIN not in challenger.threads[:FAST_CALLS]  # a pool thread first
    assert challenger.threads[-3:] == [MAIN] * 3
    router.stop()


def test_a_challenger_that_turns_slow_on_the_loops_thread_is_still_timed_out() -> None:
    recorder = Recorder()
    challenger = StandIn("2")
    router = _router(StandIn("1"), challenger, CANARY_ALL, recorder, timeout_s=0.1)
    _warm_up(router)
    challenger.delay_s = 1.0  # a sleep waits, it does not compute: cut at the cap (20 ms)
    calls_before = challenger.calls
    started = time.perf_counter()
    answer = asyncio.run(router.predict(FEATURES))
    assert time.perf_counter() - started < 0.4
    assert (answer.version, answer.arm) == ("1", Arm.CHAMPION)
    failed = recorder.events[-2]
    assert failed.arm is Arm.CHALLENGER and not failed.served
    assert failed.error is not None and failed.error.startswith("timeout")
    # interrupted on the loop's thread, then tried again on a pool thread
    assert challenger.calls == calls_before + 2
    assert challenger.threads[-2] == MAIN and challenger.threads[-1] != MAIN
    challenger.delay_s = 0.0
    asyncio.run(router.predict(FEATURES))
    assert challenger.threads[-1] != MAIN, "after a slow call it goes back to the pool"
    router.stop()


def test_a_call_over_the_inline_budget_is_answered_from_the_pool_within_the_timeout() -> None:
    recorder = Recorder()
    challenger = StandIn("2")
    router = _router(StandIn("1"), challenger, CANARY_ALL, recorder, timeout_s=0.5)
    _warm_up(router)
    challenger.delay_s = 0.03
    answer = asyncio.run(router.predict(FEATURES))
    assert (answer.version, answer.arm) == ("2", Arm.CHALLENGER)
    event = recorder.events[-1]
    assert event.served and event.error is None
    # what the user waited: the interrupted attempt (cut at 20 ms) and the whole second one
    assert event.latency_ms >= 30.0 + 19.0
    router.stop()


def test_the_inline_timer_ignores_late_alarms_and_cannot_be_swallowed() -> None:
    timer = INLINE_TIMER
    assert timer.usable()
    assert timer.call(0.5, 1.0, lambda: 42) == 42
    signal.raise_signal(signal.SIGALRM)  # the alarm ringing just after: ignored

    def swallowing() -> str:
        try:
            time.sleep(1.0)
        except Exception:
            return "swallowed"
        return "slept"

    started = time.perf_counter()
    assert timer.call(0.01, 0.06, swallowing) not in ("swallowed", "slept")
    waited = time.perf_counter() - started
    assert 0.05 <= waited < 0.5, "a call that waits is interrupted at the cap, not the budget"
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(timer.usable()))
    thread.start()
    thread.join()
    assert results == [False], "signals reach the main thread only"


def test_the_inline_timer_interrupts_a_computing_call_after_its_cpu_budget() -> None:
    def spin() -> str:
        deadline = time.perf_counter() + 2.0
        while time.perf_counter() < deadline:
            pass
        return "spun"

    started = time.thread_time()
    assert INLINE_TIMER.call(0.01, 1.0, spin) != "spun"
    assert 0.009 <= time.thread_time() - started < 0.2


def test_each_run_over_the_budget_doubles_the_fast_calls_wanted_before_inline_again() -> None:
    from modelcanary.router import FORGIVE_AFTER, MAX_FAST_CALLS, _Pace

    pace = _Pace()
    for _ in range(FAST_CALLS - 1):
        pace.pooled(1.0, 5.0)
    pace.pooled(4.0, 5.0)  # between half the budget and the budget: does not count
    assert not pace.inline
    pace.pooled(1.0, 5.0)
    assert pace.inline
    pace.over_budget()
    assert (pace.inline, pace.needed) == (False, 2 * FAST_CALLS)
    for _ in range(2 * FAST_CALLS - 1):
        pace.pooled(1.0, 5.0)
    pace.pooled(6.0, 5.0)  # over the budget on the pool: start counting again
    assert not pace.inline and pace.fast == 0
    for _ in range(20):
        pace.over_budget()
    assert pace.needed == MAX_FAST_CALLS
    pace.inline = True
    for _ in range(FORGIVE_AFTER):
        pace.answered_inline()
    assert pace.needed == MAX_FAST_CALLS // 2
