"""Operator actions on a rollout, behind the admin endpoints and the `rollout` CLI.

An operator's action is a decision like the judge's: it is published on the decisions
topic (so it is audited and pushed to every router like any other) and applied by the
controller, which checks it against the rollout's current state. Only ``start`` writes
to the registry directly (through :meth:`Controller.start`), since there is no rollout
yet to decide about.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Protocol

from modelcanary.controller import Controller
from modelcanary.errors import ModelcanaryError, RolloutError
from modelcanary.events import Action, DecisionEvent
from modelcanary.policy import Policy, default_policy, policy_from_dict
from modelcanary.rollout import Rollout, apply_action

MANUAL_ACTIONS = (
    Action.PAUSE, Action.RESUME, Action.APPROVE, Action.PROMOTE, Action.ROLLBACK,
    Action.ABORT, Action.SET_TRAFFIC,
)  # fmt: skip


class Publisher(Protocol):
    def publish(self, topic: str, event: Any) -> None: ...


class UnauthorizedError(ModelcanaryError):
    """The admin call carries no bearer token, or the wrong one."""


class AdminDisabledError(ModelcanaryError):
    """No admin token is configured, so admin calls are refused."""


def check_token(configured: str | None, authorization: str | None) -> None:
    """Accept ``Authorization: Bearer <token>`` matching the configured token."""
    if not configured:
        raise AdminDisabledError(
            "admin endpoints are disabled: set MODELCANARY_ADMIN_TOKEN on the serving replicas"
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), configured):
        raise UnauthorizedError("missing or wrong bearer token (Authorization: Bearer <token>)")


@dataclass(frozen=True)
class RolloutStatus:
    rollout: Rollout | None
    latest: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        rollout = self.rollout
        return {
            "rollout": None if rollout is None else {
                **{k: v for k, v in rollout.__dict__.items() if k not in ("state", "mode")},
                "state": rollout.state.value,
                "mode": rollout.mode.value,
                "label": rollout.label,
            },
            "latest_decision": self.latest,
        }  # fmt: skip


class RolloutAdmin:
    def __init__(self, model: str, controller: Controller, publisher: Publisher,
                 decisions_topic: str) -> None:  # fmt: skip
        self.model = model
        self.controller = controller
        self.publisher = publisher
        self.decisions_topic = decisions_topic

    def start(self, version: str, policy: dict[str, Any] | None = None) -> Rollout:
        chosen: Policy = policy_from_dict(policy) if policy else default_policy()
        return self.controller.start(self.model, str(version), chosen)

    def act(
        self, action: Action, reason: str, traffic_fraction: float | None = None,
        by: str = "operator",
    ) -> DecisionEvent:  # fmt: skip
        """Publish an operator's decision; refuse at once what the state machine refuses."""
        if action not in MANUAL_ACTIONS:
            allowed = ", ".join(a.value for a in MANUAL_ACTIONS)
            raise RolloutError(f"{action.value} is not an operator action; use one of {allowed}")
        rollout = self.controller.store.load(self.model)
        if rollout is None:
            raise RolloutError(f"{self.model} has no rollout: start one first")
        policy = self.controller.store.load_policy(self.model) or default_policy()
        target = apply_action(rollout, action, policy, rollout.updated_at, reason,
                              traffic_fraction=traffic_fraction)  # fmt: skip
        decision = DecisionEvent(
            model=self.model,
            rollout_id=rollout.rollout_id,
            action=action,
            from_state=rollout.label,
            to_state=target.label,
            traffic_fraction=target.traffic_fraction,
            reason=f"{action.value} by {by}: {reason}" if reason else f"{action.value} by {by}",
            evidence={"manual": True, "by": by},
        )
        self.publisher.publish(self.decisions_topic, decision)
        return decision

    def status(self, latest: dict[str, Any] | None = None) -> RolloutStatus:
        return RolloutStatus(self.controller.store.load(self.model), latest)
