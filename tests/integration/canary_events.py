"""Canary traffic as the serving layer logs it, for the evaluator's integration tests."""

from __future__ import annotations

import random

from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent


def canary_events(
    rng: random.Random, requests: int, rollout_id: str
) -> list[PredictionEvent | OutcomeEvent]:
    """Each request's prediction then its outcome, in request order: 30% to a challenger
    that is right 85% of the time, the champion 95%. Callers reorder them as they need."""
    out: list[PredictionEvent | OutcomeEvent] = []
    for i in range(requests):
        arm = Arm.CHALLENGER if rng.random() < 0.3 else Arm.CHAMPION
        label = rng.randrange(2)
        correct = rng.random() < (0.85 if arm is Arm.CHALLENGER else 0.95)
        out.append(PredictionEvent(
            model="m", request_id=f"req-{i}", version="2" if arm is Arm.CHALLENGER else "1",
            arm=arm, mode=Mode.CANARY, served=True, prediction=label if correct else 1 - label,
            latency_ms=rng.uniform(1, 4), rollout_id=rollout_id, step=0, traffic_fraction=0.3,
        ))  # fmt: skip
        out.append(OutcomeEvent(model="m", request_id=f"req-{i}", label=label))
    return out
