"""The judge finds rollouts in the registry, not only in evaluator snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelcanary.config import Topics
from modelcanary.controller import Controller
from modelcanary.errors import RegistryUnavailableError
from modelcanary.events import Action, DecisionEvent
from modelcanary.judging import JudgeLoop
from modelcanary.policy import Policy, Step, TimeoutAction, default_policy
from modelcanary.registry_memory import InMemoryRegistry
from modelcanary.rollout_store import ROLLOUT_TAG, RolloutStore
from modelcanary.snapshot import Snapshot

POLICY = Policy(steps=(Step(0.2, max_duration_s=30),), gates=default_policy().gates)


@dataclass
class ListPublisher:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def publish(self, topic: str, event: Any) -> None:
        self.events.append((topic, event))


def registry_with_rollouts() -> tuple[InMemoryRegistry, Controller]:
    registry = InMemoryRegistry()
    controller = Controller(registry, clock=lambda: 90.0)
    for name in ("quiet", "done", "idle"):
        registry.set_alias(name, "champion", "1")
    controller.start("quiet", "2", POLICY)
    controller.start("done", "2", POLICY)
    rollout = controller.store.load("done")
    assert rollout is not None
    decision = DecisionEvent(
        model="done", rollout_id=rollout.rollout_id, action=Action.ABORT,
        from_state=rollout.label, to_state="aborted", traffic_fraction=0.0, reason="test",
    )  # fmt: skip
    assert controller.apply(decision).applied
    return registry, controller


def test_active_models_are_those_with_a_rollout_in_progress() -> None:
    registry, _ = registry_with_rollouts()
    registry.set_model_tags("broken", {ROLLOUT_TAG: "not json"})
    assert RolloutStore(registry).active_models() == ["quiet"]


def test_a_rollout_without_any_traffic_is_found_and_times_out() -> None:
    store = registry_with_rollouts()[1].store
    now = {"t": 100.0}
    calls = []

    def discover() -> list[str]:
        calls.append(now["t"])
        return store.active_models()

    published = ListPublisher()
    loop = JudgeLoop(
        Topics("t"), published, lambda m: (store.load(m), store.load_policy(m)),
        clock=lambda: now["t"], discover=discover, discover_every_s=10.0,
    )  # fmt: skip
    [hold] = loop.tick()  # no snapshot ever named "quiet"
    assert hold.model == "quiet" and hold.action is Action.HOLD
    now["t"] = 131.0
    [rollback] = loop.tick()
    assert rollback.action is Action.ROLLBACK and "maximum" in rollback.reason
    now["t"] = 135.0
    loop.tick()
    assert calls == [100.0, 131.0]  # at most every discover_every_s


def test_discovery_failure_is_retried_and_known_models_still_judged() -> None:
    store = registry_with_rollouts()[1].store
    failures = iter([True, False])

    def discover() -> list[str]:
        if next(failures):
            raise RegistryUnavailableError("MLflow is down")
        return store.active_models()

    loop = JudgeLoop(
        Topics("t"), ListPublisher(), lambda m: (store.load(m), store.load_policy(m)),
        clock=lambda: 100.0, discover=discover,
    )  # fmt: skip
    assert loop.tick() == [] and loop.models == set()
    assert [d.model for d in loop.tick()] == ["quiet"]


def test_a_halt_is_published_again_after_an_operator_resumes() -> None:
    registry = InMemoryRegistry()
    now = {"t": 100.0}
    controller = Controller(registry, clock=lambda: now["t"])
    registry.set_alias("m", "champion", "1")
    halting = Policy(
        steps=(Step(0.2, max_duration_s=30),), gates=default_policy().gates,
        on_timeout=TimeoutAction.HALT,
    )  # fmt: skip
    controller.start("m", "2", halting)
    store = controller.store
    published = ListPublisher()
    loop = JudgeLoop(
        Topics("t"), published, lambda m: (store.load(m), store.load_policy(m)),
        clock=lambda: now["t"], watch=["m"],
    )  # fmt: skip
    for resumed_at in (140.0, 180.0):
        now["t"] = resumed_at
        [halt] = [d for d in loop.tick() if d.action is Action.HALT]
        assert controller.apply(halt).applied
        assert loop.tick() == []  # halted: nothing to judge
        rollout = store.load("m")
        assert rollout is not None
        resume = DecisionEvent(
            model="m", rollout_id=rollout.rollout_id, action=Action.RESUME,
            from_state=rollout.label, to_state=f"running:{rollout.step}",
            traffic_fraction=rollout.traffic_fraction, reason="operator",
        )  # fmt: skip
        now["t"] = resumed_at + 1
        assert controller.apply(resume).applied


def test_models_without_a_rollout_in_progress_are_not_read_at_every_tick() -> None:
    controller = registry_with_rollouts()[1]
    store = controller.store
    now = {"t": 100.0}
    reads: list[str] = []

    def read(model: str) -> tuple[Any, Any]:
        reads.append(model)
        return store.load(model), store.load_policy(model)

    loop = JudgeLoop(
        Topics("t"), ListPublisher(), read, clock=lambda: now["t"],
        watch=["done", "idle"], discover=store.active_models, discover_every_s=10.0,
    )  # fmt: skip
    loop.tick()
    assert sorted(reads) == ["done", "idle", "quiet"] and loop.dormant == {"done", "idle"}
    reads.clear()
    for t in (101.0, 102.0, 103.0):
        now["t"] = t
        loop.tick()
    assert reads == ["quiet"] * 3  # the ended and the never-started are left alone

    controller.start("idle", "2", POLICY)  # a new rollout: the next discovery finds it
    now["t"] = 111.0
    reads.clear()
    loop.tick()
    assert sorted(reads) == ["idle", "quiet"] and loop.dormant == {"done"}


def test_evidence_of_a_new_rollout_wakes_a_dormant_model_before_discovery() -> None:
    controller = registry_with_rollouts()[1]
    store = controller.store
    loop = JudgeLoop(
        Topics("t"), ListPublisher(), lambda m: (store.load(m), store.load_policy(m)),
        clock=lambda: 100.0, watch=["done"],
    )  # fmt: skip
    loop.tick()
    ended = store.load("done")
    assert ended is not None and loop.dormant == {"done"}
    loop.update(Snapshot(0, {}, {}, models={ended.rollout_id: "done"}, written_at=1.0))
    assert loop.dormant == {"done"}  # evidence of the rollout that ended: still dormant
    controller.start("done", "3", POLICY)
    fresh = store.load("done")
    assert fresh is not None
    loop.update(Snapshot(0, {}, {}, models={fresh.rollout_id: "done"}, written_at=2.0))
    assert loop.dormant == set()
