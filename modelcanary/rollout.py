"""The rollout lifecycle: an enum of states and one table of legal transitions. Pure.

::

    pending ──start──> running(step 0) ──advance──> running(step k+1) ──promote──> promoted
                         │   ▲  │                        │
                  pause  │   │  │ halt (SRM)             ├──rollback──> rolled_back
                         ▼   │  ▼                        └──abort─────> aborted
                       paused  halted ──resume──> running

A rollout is persisted as one JSON value (see ``to_json``) so that a state change is a
single atomic write in the registry.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from modelcanary.errors import RolloutError
from modelcanary.events import Action, Mode
from modelcanary.policy import Policy


class RolloutState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({RolloutState.PROMOTED, RolloutState.ROLLED_BACK, RolloutState.ABORTED})

S = RolloutState
LEGAL_TRANSITIONS: dict[RolloutState, frozenset[RolloutState]] = {
    S.PENDING: frozenset({S.RUNNING, S.ABORTED}),
    S.RUNNING: frozenset({S.RUNNING, S.PAUSED, S.HALTED, S.PROMOTED, S.ROLLED_BACK, S.ABORTED}),
    S.PAUSED: frozenset({S.PAUSED, S.RUNNING, S.PROMOTED, S.ROLLED_BACK, S.ABORTED}),
    S.HALTED: frozenset({S.HALTED, S.RUNNING, S.PROMOTED, S.ROLLED_BACK, S.ABORTED}),
    S.PROMOTED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.ABORTED: frozenset(),
}


def check_transition(current: RolloutState, target: RolloutState) -> None:
    """Raise :class:`RolloutError` if ``current -> target`` is not in the table."""
    if target in LEGAL_TRANSITIONS[current]:
        return
    if current.terminal:
        raise RolloutError(
            f"the rollout is already {current.value}; start a new rollout to change traffic"
        )
    allowed = ", ".join(sorted(s.value for s in LEGAL_TRANSITIONS[current])) or "nothing"
    raise RolloutError(
        f"a {current.value} rollout cannot become {target.value}; from {current.value} it can "
        f"become: {allowed}"
    )


@dataclass(frozen=True)
class Rollout:
    """A candidate's progress from 0% to 100% of traffic, as persisted in the registry."""

    rollout_id: str
    model: str
    champion_version: str
    challenger_version: str
    state: RolloutState
    step: int
    traffic_fraction: float
    mode: Mode
    started_at: float
    step_started_at: float
    updated_at: float
    reason: str = ""
    approved_step: int | None = None

    @property
    def label(self) -> str:
        """The state as decisions name it: ``running:2``, ``promoted``, ..."""
        if self.state in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED):
            return f"{self.state.value}:{self.step}"
        return self.state.value

    @property
    def awaits_approval_of_step(self) -> bool:
        """True once the current step has not been approved by an operator."""
        return self.approved_step != self.step

    @property
    def routes_traffic(self) -> bool:
        """Whether routers send the challenger any traffic (a halted split stays frozen)."""
        return self.state in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Rollout:
        obj: dict[str, Any] = json.loads(raw)
        obj.setdefault("approved_step", None)
        obj["state"] = RolloutState(obj["state"])
        obj["mode"] = Mode(obj["mode"])
        return cls(**obj)

    def move(self, target: RolloutState, now: float, reason: str = "", **changes: Any) -> Rollout:
        check_transition(self.state, target)
        return replace(self, state=target, updated_at=now, reason=reason, **changes)


def new_rollout(
    model: str,
    champion_version: str,
    challenger_version: str,
    policy: Policy,
    now: float | None = None,
) -> Rollout:
    """A rollout at its first step, ready to receive traffic."""
    now = time.time() if now is None else now
    first = policy.steps[0]
    return Rollout(
        rollout_id=f"{model}-v{challenger_version}-{uuid.uuid4().hex[:8]}",
        model=model,
        champion_version=champion_version,
        challenger_version=challenger_version,
        state=RolloutState.RUNNING,
        step=0,
        traffic_fraction=first.traffic_fraction,
        mode=first.mode,
        started_at=now,
        step_started_at=now,
        updated_at=now,
        reason="rollout started",
    )


def apply_action(
    rollout: Rollout,
    action: Action,
    policy: Policy,
    now: float,
    reason: str,
    traffic_fraction: float | None = None,
) -> Rollout:
    """The rollout after ``action``: pure, raises :class:`RolloutError` if illegal now."""
    state = rollout.state
    if action is Action.ADVANCE:
        if rollout.step + 1 >= len(policy.steps):
            raise RolloutError(
                f"rollout {rollout.rollout_id} is at its last step ({rollout.step + 1} of "
                f"{len(policy.steps)}); promote it instead of advancing"
            )
        nxt = policy.steps[rollout.step + 1]
        return rollout.move(
            RolloutState.RUNNING,
            now,
            reason,
            step=rollout.step + 1,
            traffic_fraction=nxt.traffic_fraction,
            mode=nxt.mode,
            step_started_at=now,
        )
    if action is Action.PROMOTE:
        return rollout.move(RolloutState.PROMOTED, now, reason, traffic_fraction=1.0)
    if action is Action.ROLLBACK:
        return rollout.move(RolloutState.ROLLED_BACK, now, reason, traffic_fraction=0.0)
    if action is Action.HALT:
        return rollout.move(RolloutState.HALTED, now, reason)
    if action is Action.ABORT:
        return rollout.move(RolloutState.ABORTED, now, reason, traffic_fraction=0.0)
    if action is Action.PAUSE:
        if state is not RolloutState.RUNNING:
            raise RolloutError(f"only a running rollout can be paused; this one is {state.value}")
        return rollout.move(RolloutState.PAUSED, now, reason)
    if action is Action.RESUME:
        if state not in (RolloutState.PAUSED, RolloutState.HALTED):
            raise RolloutError(
                f"only a paused or halted rollout can be resumed; this one is {state.value}"
            )
        # The step's clock restarts: time spent paused does not count towards its maximum.
        return rollout.move(RolloutState.RUNNING, now, reason, step_started_at=now)
    if action is Action.APPROVE:
        if state is not RolloutState.RUNNING:
            raise RolloutError(f"only a running rollout can be approved; this one is {state.value}")
        return rollout.move(RolloutState.RUNNING, now, reason, approved_step=rollout.step)
    if action is Action.SET_TRAFFIC:
        if traffic_fraction is None or not 0.0 <= traffic_fraction <= 1.0:
            raise RolloutError(f"set_traffic needs a fraction in [0, 1], got {traffic_fraction}")
        if state.terminal:
            check_transition(state, state)
        return rollout.move(state, now, reason, traffic_fraction=traffic_fraction)
    if action is Action.HOLD:
        return rollout
    raise RolloutError(f"unknown action {action!r}")
