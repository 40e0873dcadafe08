from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from modelcanary.admin import AdminDisabledError, RolloutAdmin, UnauthorizedError, check_token
from modelcanary.controller import Controller
from modelcanary.errors import RolloutError
from modelcanary.events import Action
from modelcanary.policy import Policy, Step
from modelcanary.registry_memory import InMemoryRegistry


@dataclass
class ListPublisher:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def publish(self, topic: str, event: Any) -> None:
        self.events.append((topic, event))


def admin() -> tuple[RolloutAdmin, Controller, ListPublisher]:
    registry = InMemoryRegistry()
    registry.set_alias("m", "champion", "1")
    controller = Controller(registry, clock=lambda: 10.0)
    publisher = ListPublisher()
    return RolloutAdmin("m", controller, publisher, "decisions"), controller, publisher


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, UnauthorizedError),
        ("Bearer nope", UnauthorizedError),
        ("s3cret", UnauthorizedError),
        ("Basic s3cret", UnauthorizedError),
    ],
)
def test_tokens_are_checked(header: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_token("s3cret", header)
    check_token("s3cret", "Bearer s3cret")


def test_admin_is_disabled_without_a_configured_token() -> None:
    with pytest.raises(AdminDisabledError, match="MODELCANARY_ADMIN_TOKEN"):
        check_token(None, "Bearer anything")


def test_operator_actions_are_published_decisions_the_controller_applies() -> None:
    rollouts, controller, publisher = admin()
    rollouts.start("2", Policy(steps=(Step(0.1, requires_approval=True), Step(0.5))).to_dict())
    decision = rollouts.act(Action.PAUSE, "looking at a dashboard", by="alice")
    [(topic, event)] = publisher.events
    assert topic == "decisions" and event is decision
    assert decision.from_state == "running:0" and decision.to_state == "paused:0"
    assert "alice" in decision.reason and decision.evidence["manual"] is True
    assert controller.apply(decision).applied
    with pytest.raises(RolloutError, match="only a running rollout can be paused"):
        rollouts.act(Action.PAUSE, "again")
    assert controller.apply(rollouts.act(Action.RESUME, "")).applied
    assert controller.apply(rollouts.act(Action.APPROVE, "ok")).applied
    assert controller.store.load("m").approved_step == 0  # type: ignore[union-attr]
    assert controller.apply(rollouts.act(Action.SET_TRAFFIC, "more", traffic_fraction=0.3)).applied
    assert controller.store.load("m").traffic_fraction == 0.3  # type: ignore[union-attr]
    with pytest.raises(RolloutError, match="not an operator action"):
        rollouts.act(Action.ADVANCE, "")
