"""The judge loop: merge partition snapshots into one view per rollout, judge, publish.

Evaluator workers each own some partitions and publish a snapshot per partition; this
loop keeps the latest snapshot of every partition, merges the evidence of each rollout
across them (merging equals one pass over the union, so the decision does not depend
on how many workers there are), judges every running rollout on a tick and publishes
the decisions worth acting on. It runs in the controller process: one judge, however
many evaluators, however many models.

Which models it judges: every model named in a snapshot (one with evidence), plus every
model ``discover`` returns — the registry's models with a rollout in progress, asked
every ``discover_every_s``. Discovery is what makes a rollout that gets no traffic at
all (its replicas are down, or nobody calls them) still hold, and end at its step's
``max_duration_s``: with snapshots alone, the judge would never hear of it. A model
whose rollout has ended (or that has none) is dormant: not read from the registry at
each tick until discovery lists it again or a snapshot brings evidence of a rollout the
judge has not seen end, so the registry's load follows the rollouts in progress, not
every model that ever had one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelcanary.config import Topics
from modelcanary.errors import ModelcanaryError
from modelcanary.events import Action, DecisionEvent, Mode
from modelcanary.judge import JudgeContext, Judgement, RolloutEvidence, judge
from modelcanary.policy import Policy
from modelcanary.report.extras import evidently_html, report_evidence
from modelcanary.rollout import Rollout, RolloutState, apply_action
from modelcanary.snapshot import Snapshot

log = logging.getLogger(__name__)

RolloutReader = Callable[[str], tuple[Rollout | None, Policy | None]]
#: Names of the models that have a rollout in progress (a registry search).
ModelDiscovery = Callable[[], Iterable[str]]


class Publisher(Protocol):
    def publish(self, topic: str, event: Any) -> None: ...


@dataclass
class _Published:
    keys: set[tuple[str, float, str]] = field(default_factory=set)
    last_hold: float = 0.0


class JudgeLoop:
    def __init__(
        self,
        topics: Topics,
        publisher: Publisher,
        read_rollout: RolloutReader,
        hold_every_s: float = 10.0,
        watch: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        discover: ModelDiscovery | None = None,
        discover_every_s: float = 10.0,
    ) -> None:
        self.topics = topics
        self.publisher = publisher
        self.read_rollout = read_rollout
        self.hold_every_s = hold_every_s
        self.clock = clock
        self.models: set[str] = set(watch)
        self.discover = discover
        self.discover_every_s = discover_every_s
        self._next_discovery = float("-inf")
        self.dormant: set[str] = set()
        self._ended: set[str] = set()  # rollout ids seen finished
        self.snapshots: dict[int, Snapshot] = {}
        self.last_judgements: dict[str, Judgement] = {}
        self._published: dict[str, _Published] = {}
        self._lock = threading.Lock()
        # Evidently's HTML of the decisions worth a report, by event id, for the recorder.
        self.drift_reports: OrderedDict[str, str] = OrderedDict()

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            current = self.snapshots.get(snapshot.partition)
            if current is None or snapshot.written_at >= current.written_at:
                self.snapshots[snapshot.partition] = snapshot
                self.models.update(snapshot.models.values())
                self.dormant.difference_update(
                    model for rollout_id, model in snapshot.models.items()
                    if rollout_id not in self._ended
                )  # fmt: skip

    def evidence(self, rollout_id: str) -> RolloutEvidence:
        """The rollout's evidence merged over the latest snapshot of every partition."""
        with self._lock:
            parts = [
                s.evidence[rollout_id] for s in self.snapshots.values() if rollout_id in s.evidence
            ]
        return RolloutEvidence.merged(parts) if parts else RolloutEvidence()

    def judge_rollout(
        self, rollout: Rollout, policy: Policy, now: float, evidence: RolloutEvidence | None = None
    ) -> Judgement:
        ctx = JudgeContext(
            rollout_id=rollout.rollout_id,
            step_index=rollout.step,
            step_started_at=rollout.step_started_at,
            now=now,
        )
        evidence = self.evidence(rollout.rollout_id) if evidence is None else evidence
        judgement = judge(policy, evidence, ctx)
        if (
            judgement.action in (Action.ADVANCE, Action.PROMOTE)
            and policy.steps[rollout.step].requires_approval
            and rollout.awaits_approval_of_step
        ):
            judgement = Judgement(
                action=Action.HOLD,
                reason=(
                    f"Waiting for approval: every gate passed at step {rollout.step + 1}, "
                    f"which needs a manual approval (`modelcanary rollout approve "
                    f"{rollout.model}`)."
                ),
                verdicts=judgement.verdicts,
                evidence={**judgement.evidence, "awaiting_approval": True},
            )
        self.last_judgements[rollout.rollout_id] = judgement
        return judgement

    def tick(self) -> list[DecisionEvent]:
        """Judge every running rollout once; publish what should be acted on."""
        now = self.clock()
        self._discover(now)
        decisions: list[DecisionEvent] = []
        for model in sorted(self.models - self.dormant):
            rollout, policy = self.read_rollout(model)
            if rollout is None or rollout.state.terminal:
                with self._lock:
                    self.dormant.add(model)
                    if rollout is not None:
                        self._ended.add(rollout.rollout_id)
                continue
            if policy is None or rollout.state is not RolloutState.RUNNING:
                continue
            evidence = self.evidence(rollout.rollout_id)
            judgement = self.judge_rollout(rollout, policy, now, evidence)
            mode = policy.steps[rollout.step].mode
            decision = _decision(rollout, policy, judgement, now, report_evidence(evidence, mode))
            if decision is None or not self._worth_publishing(rollout, decision, now):
                continue
            if decision.action is not Action.HOLD:
                self._keep_drift_report(decision.event_id, evidence, mode, policy)
            self.publisher.publish(self.topics.decisions, decision)
            decisions.append(decision)
        return decisions

    def _discover(self, now: float) -> None:
        """Add the models with a rollout in progress, at most every ``discover_every_s``.

        A failed search (MLflow unreachable) is retried at the next tick; the models
        already known are judged meanwhile.
        """
        if self.discover is None or now < self._next_discovery:
            return
        try:
            found = set(self.discover())
        except ModelcanaryError as exc:
            log.warning("cannot list the models with a rollout, retrying: %s", exc)
            return
        self._next_discovery = now + self.discover_every_s
        with self._lock:
            new = found - self.models
            self.models.update(found)
            self.dormant -= found
        if new:
            log.info("judging the rollouts of %s too", ", ".join(sorted(new)))

    def _keep_drift_report(
        self, event_id: str, evidence: RolloutEvidence, mode: Mode, policy: Policy
    ) -> None:
        try:
            html = evidently_html(evidence, mode, policy.drift)
        except Exception as exc:  # a report must never stop a decision
            log.warning("no Evidently report for %s: %s", event_id, exc)
            return
        if html is not None:
            self.drift_reports[event_id] = html
            while len(self.drift_reports) > 20:
                self.drift_reports.popitem(last=False)

    def _worth_publishing(self, rollout: Rollout, decision: DecisionEvent, now: float) -> bool:
        """Holds at most every ``hold_every_s``; any other decision once per version of the rollout.

        The version is its state and ``updated_at``: after an operator's ``resume`` the
        rollout is ``running`` at the same step again, and a halt must be published anew.
        """
        published = self._published.setdefault(rollout.rollout_id, _Published())
        if decision.action is Action.HOLD:
            if now - published.last_hold < self.hold_every_s:
                return False
            published.last_hold = now
            return True
        key = (rollout.label, rollout.updated_at, decision.action.value)
        if key in published.keys:
            return False
        published.keys.add(key)
        return True


def _decision(
    rollout: Rollout, policy: Policy, judgement: Judgement, now: float,
    extra_evidence: dict[str, Any] | None = None,
) -> DecisionEvent | None:  # fmt: skip
    try:
        target = apply_action(rollout, judgement.action, policy, now, judgement.reason)
    except Exception as exc:
        log.warning("judge asked for %s, illegal now: %s", judgement.action.value, exc)
        return None
    return DecisionEvent(
        model=rollout.model,
        rollout_id=rollout.rollout_id,
        action=judgement.action,
        from_state=rollout.label,
        to_state=target.label,
        traffic_fraction=target.traffic_fraction,
        reason=judgement.reason,
        evidence={
            **judgement.evidence,
            **(extra_evidence or {}),
            "champion_version": rollout.champion_version,
            "challenger_version": rollout.challenger_version,
        },
    )
