"""The controller: starts rollouts and applies decisions to the registry.

It decides nothing: the judge decides, the controller makes it so. It applies a decision
only if the decision was made for the rollout's current state (``decision.from_state ==
rollout.label``), which makes re-delivered or stale decisions harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelcanary.errors import RolloutError
from modelcanary.events import Action, DecisionEvent
from modelcanary.policy import Policy
from modelcanary.rollout import Rollout, apply_action, new_rollout
from modelcanary.rollout_store import CHALLENGER, CHAMPION, RegistryPort, RolloutStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """The outcome of handing one decision to the controller."""

    decision: DecisionEvent
    applied: bool
    rollout: Rollout | None
    note: str


class Controller:
    def __init__(self, registry: RegistryPort, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.store = RolloutStore(registry)
        self.clock = clock

    def start(self, model: str, challenger_version: str, policy: Policy) -> Rollout:
        """Start a rollout of ``challenger_version`` against the current champion.

        Order: policy tag, ``challenger`` alias, then the rollout tag. Routers route only
        when the rollout tag says running, so a failure before the last write leaves
        traffic untouched and the start can simply be retried.
        """
        champion = self.registry.alias_version(model, CHAMPION)
        if champion is None:
            raise RolloutError(
                f"{model} has no champion yet: register a first version (it becomes champion)"
            )
        if str(champion) == str(challenger_version):
            raise RolloutError(f"version {challenger_version} of {model} is already the champion")
        current = self.store.load(model)
        if current is not None and not current.state.terminal:
            raise RolloutError(
                f"{model} already has a {current.state.value} rollout ({current.rollout_id} of "
                f"version {current.challenger_version}); roll it back or abort it first"
            )
        rollout = new_rollout(model, str(champion), str(challenger_version), policy, self.clock())
        self.store.save_policy(model, policy)
        self.registry.set_alias(model, CHALLENGER, str(challenger_version))
        self.store.save(rollout)
        log.info("started %s at %.0f%%", rollout.rollout_id, rollout.traffic_fraction * 100)
        return rollout

    def apply(self, decision: DecisionEvent) -> Applied:
        """Apply one decision. Order of side effects, and what a failure at step k leaves:

        advance:  1. rollout tag (new step and fraction). One write: all or nothing.
        promote:  1. ``champion`` alias -> challenger version (users now get the candidate)
                  2. tag the old champion ``retired`` with when and why
                  3. delete the ``challenger`` alias
                  4. rollout tag ``promoted`` — the commit point.
        rollback: 1. delete the ``challenger`` alias (users stop getting the candidate first)
                  2. tag the candidate ``rolled_back`` with the reason
                  3. rollout tag ``rolled_back`` — the commit point.
        halt:     1. rollout tag ``halted`` (routers freeze the split; nothing else changes).

        Every step is idempotent and the rollout tag is written last, so if the registry
        fails at step k the rollout still carries its old state, the decision is re-read
        (offsets are committed only after ``apply`` returns) and re-applied from step 1:
        nothing is applied twice, nothing is left half done.
        """
        rollout = self.store.load(decision.model)
        if rollout is None or rollout.rollout_id != decision.rollout_id:
            return Applied(decision, False, rollout, "no such rollout (stale decision)")
        if decision.from_state != rollout.label:
            return Applied(
                decision,
                False,
                rollout,
                f"decision was made in {decision.from_state}, rollout is {rollout.label}",
            )
        if decision.action is Action.HOLD:
            return Applied(decision, False, rollout, "hold: nothing to change")
        policy = self.store.load_policy(decision.model)
        if policy is None:
            raise RolloutError(f"{decision.model} has a rollout but no policy tag")
        now = self.clock()
        try:
            target = apply_action(
                rollout,
                decision.action,
                policy,
                now,
                decision.reason,
                traffic_fraction=decision.traffic_fraction,
            )
        except RolloutError as exc:
            return Applied(decision, False, rollout, str(exc))
        model = decision.model
        if decision.action is Action.PROMOTE:
            self.registry.set_alias(model, CHAMPION, rollout.challenger_version)
            self.store.tag_version(
                model,
                rollout.champion_version,
                "retired",
                f"replaced by version {rollout.challenger_version}: {decision.reason}",
                now,
                rollout.rollout_id,
            )
            self.registry.delete_alias(model, CHALLENGER)
        elif decision.action in (Action.ROLLBACK, Action.ABORT):
            self.registry.delete_alias(model, CHALLENGER)
            status = "rolled_back" if decision.action is Action.ROLLBACK else "aborted"
            self.store.tag_version(
                model,
                rollout.challenger_version,
                status,
                decision.reason,
                now,
                rollout.rollout_id,
            )
        self.store.save(target)
        log.info(
            "%s: %s -> %s (%s)", rollout.rollout_id, rollout.label, target.label, decision.reason
        )
        return Applied(decision, True, target, f"{rollout.label} -> {target.label}")
