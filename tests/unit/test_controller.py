import pytest

from modelcanary.controller import Controller
from modelcanary.errors import RolloutError
from modelcanary.events import Action, DecisionEvent
from modelcanary.policy import Policy, Step
from modelcanary.registry_memory import InMemoryRegistry
from modelcanary.rollout import Rollout

POLICY = Policy(steps=(Step(0.1), Step(0.5)))


def started() -> tuple[InMemoryRegistry, Controller, Rollout]:
    registry = InMemoryRegistry()
    registry.set_alias("m", "champion", "1")
    controller = Controller(registry, clock=lambda: 100.0)
    return registry, controller, controller.start("m", "2", POLICY)


def decide(rollout: Rollout, action: Action, to_state: str = "") -> DecisionEvent:
    return DecisionEvent(
        model="m",
        rollout_id=rollout.rollout_id,
        action=action,
        from_state=rollout.label,
        to_state=to_state,
        traffic_fraction=0.0,
        reason=f"because {action.value}",
    )


def test_start_sets_challenger_and_first_step() -> None:
    registry, _, rollout = started()
    assert registry.alias_version("m", "challenger") == "2"
    assert rollout.traffic_fraction == 0.1


def test_start_refuses_without_champion_or_twice() -> None:
    with pytest.raises(RolloutError, match="no champion"):
        Controller(InMemoryRegistry()).start("m", "2", POLICY)
    _, controller, _ = started()
    with pytest.raises(RolloutError, match="already has a running rollout"):
        controller.start("m", "3", POLICY)


def test_promote_moves_champion_and_retires_the_old_one() -> None:
    registry, controller, rollout = started()
    result = controller.apply(decide(rollout, Action.PROMOTE))
    assert result.applied and result.rollout is not None
    assert registry.alias_version("m", "champion") == "2"
    assert registry.alias_version("m", "challenger") is None
    tags = registry.version_tags("m", "1")
    assert (
        tags["modelcanary.status"] == "retired" and "because promote" in tags["modelcanary.reason"]
    )
    assert controller.store.load("m").label == "promoted"  # type: ignore[union-attr]


def test_rollback_removes_challenger_and_tags_the_reason() -> None:
    registry, controller, rollout = started()
    controller.apply(decide(rollout, Action.ROLLBACK))
    assert registry.alias_version("m", "challenger") is None
    assert registry.alias_version("m", "champion") == "1"
    assert registry.version_tags("m", "2")["modelcanary.status"] == "rolled_back"


def test_a_decision_is_applied_once() -> None:
    _registry, controller, rollout = started()
    decision = decide(rollout, Action.ADVANCE)
    assert controller.apply(decision).applied
    again = controller.apply(decision)
    assert not again.applied and "running:0" in again.note
    assert controller.store.load("m").step == 1  # type: ignore[union-attr]


class FlakyRegistry(InMemoryRegistry):
    """Fails the n-th write, as an MLflow server going down mid-decision would."""

    def __init__(self, fail_on: str) -> None:
        super().__init__()
        self.fail_on = fail_on

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        if self.fail_on == "version_tags":
            self.fail_on = ""
            raise ConnectionError("mlflow down")
        super().set_version_tags(name, version, tags)


def test_a_failure_halfway_leaves_the_old_state_and_retrying_completes() -> None:
    registry = FlakyRegistry(fail_on="version_tags")
    registry.set_alias("m", "champion", "1")
    controller = Controller(registry, clock=lambda: 1.0)
    rollout = controller.start("m", "2", POLICY)
    decision = decide(rollout, Action.PROMOTE)
    with pytest.raises(ConnectionError):
        controller.apply(decision)
    assert controller.store.load("m").label == "running:0"  # type: ignore[union-attr]
    assert controller.apply(decision).applied
    assert registry.alias_version("m", "champion") == "2"
    assert registry.alias_version("m", "challenger") is None
