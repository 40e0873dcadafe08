"""The evaluator: decode, join, accumulate evidence per rollout, judge on a tick.

Pure of I/O itself: raw records come in through :meth:`Evaluator.handle`, decisions and
dead letters go out through a publisher, rollouts and policies are read through a
callable. The Kafka loop around it lives in ``pipelines/evaluate.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelcanary.config import Topics
from modelcanary.errors import EventError
from modelcanary.events import (
    Action,
    DeadLetterEvent,
    DecisionEvent,
    OutcomeEvent,
    PredictionEvent,
    decode_outcome,
    decode_prediction,
)
from modelcanary.join import JoinedRequest, Joiner
from modelcanary.judge import JudgeContext, Judgement, RolloutEvidence, judge
from modelcanary.kafka_io import Record
from modelcanary.policy import Policy
from modelcanary.rollout import Rollout, RolloutState, apply_action

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, topic: str, event: Any) -> None: ...


RolloutReader = Callable[[str], tuple[Rollout | None, Policy | None]]


@dataclass
class RolloutView:
    """What the evaluator knows about one rollout: its evidence and last judgement."""

    evidence: RolloutEvidence = field(default_factory=RolloutEvidence)
    last_judgement: Judgement | None = None
    published: set[tuple[str, str]] = field(default_factory=set)
    last_hold_published: float = 0.0


class Evaluator:
    def __init__(
        self,
        topics: Topics,
        publisher: Publisher,
        read_rollout: RolloutReader,
        join_ttl_s: float = 3600.0,
        hold_every_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = topics
        self.publisher = publisher
        self.read_rollout = read_rollout
        self.joiner = Joiner(ttl_s=join_ttl_s)
        self.hold_every_s = hold_every_s
        self.clock = clock
        self.views: dict[str, RolloutView] = {}
        self.models: set[str] = set()
        self.counts = {"predictions": 0, "outcomes": 0, "dead_letters": 0, "decisions": 0}

    def view(self, rollout_id: str) -> RolloutView:
        if rollout_id not in self.views:
            self.views[rollout_id] = RolloutView()
        return self.views[rollout_id]

    def handle(self, record: Record) -> None:
        """Decode one record; poison goes to the dead-letter topic with the reason."""
        now = self.clock()
        try:
            if record.topic == self.topics.predictions:
                self._on_prediction(decode_prediction(record.value), now)
            elif record.topic == self.topics.outcomes:
                self._on_outcome(decode_outcome(record.value), now)
            else:
                raise EventError(f"the evaluator does not read topic {record.topic}")
        except EventError as exc:
            self.counts["dead_letters"] += 1
            letter = DeadLetterEvent.wrap(record.topic, record.value or b"", str(exc), record.key)
            self.publisher.publish(self.topics.deadletter, letter)

    def _on_prediction(self, event: PredictionEvent, now: float) -> None:
        self.counts["predictions"] += 1
        self.models.add(event.model)
        if event.rollout_id is not None:
            self.view(event.rollout_id).evidence.observe_prediction(event)
        self._observe(self.joiner.add_prediction(event, now))

    def _on_outcome(self, event: OutcomeEvent, now: float) -> None:
        self.counts["outcomes"] += 1
        self.models.add(event.model)
        self._observe(self.joiner.add_outcome(event, now))

    def _observe(self, joined: list[JoinedRequest]) -> None:
        for request in joined:
            rollout_id = next(
                (p.rollout_id for p in request.predictions.values() if p.rollout_id), None
            )
            if rollout_id is not None:
                self.view(rollout_id).evidence.observe_request(request)

    def tick(self) -> list[DecisionEvent]:
        """Judge every running rollout once; publish what should be acted on."""
        now = self.clock()
        self._observe(self.joiner.expire(now))
        decisions: list[DecisionEvent] = []
        for model in sorted(self.models):
            rollout, policy = self.read_rollout(model)
            if rollout is None or policy is None or rollout.state is not RolloutState.RUNNING:
                continue
            view = self.view(rollout.rollout_id)
            ctx = JudgeContext(
                rollout_id=rollout.rollout_id,
                step_index=rollout.step,
                step_started_at=rollout.step_started_at,
                now=now,
            )
            judgement = judge(policy, view.evidence, ctx)
            view.last_judgement = judgement
            decision = self._decision(rollout, policy, judgement, now)
            if decision is None:
                continue
            key = (rollout.label, decision.action.value)
            if decision.action is Action.HOLD:
                if now - view.last_hold_published < self.hold_every_s:
                    continue
                view.last_hold_published = now
            elif key in view.published:
                continue
            view.published.add(key)
            self.publisher.publish(self.topics.decisions, decision)
            self.counts["decisions"] += 1
            decisions.append(decision)
        return decisions

    @staticmethod
    def _decision(
        rollout: Rollout, policy: Policy, judgement: Judgement, now: float
    ) -> DecisionEvent | None:
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
                "champion_version": rollout.champion_version,
                "challenger_version": rollout.challenger_version,
            },
        )
