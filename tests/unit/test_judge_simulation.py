"""Suite-sized simulations through the real judge: the false-rollback rate under A/A
stays below alpha, regressions are caught, shadow (paired) needs fewer samples.

Tolerances: a rate estimated from N trials is allowed 3 binomial standard errors above
its bound. The full-size numbers come from ``benchmarks/decision_quality.py``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from modelcanary.events import Action, Arm, Mode
from modelcanary.judge import JudgeContext, RolloutEvidence, judge
from modelcanary.policy import (
    Direction,
    DriftSettings,
    Gate,
    MarginType,
    Policy,
    Step,
)

pytestmark = pytest.mark.slow

ALPHA = 0.05


def policy(mode: Mode = Mode.CANARY, latency: bool = False, srm: bool = False) -> Policy:
    gates = [Gate("accuracy", Direction.HIGHER_IS_BETTER, margin=0.0)]
    if latency:
        gates += [
            Gate("error_rate", Direction.LOWER_IS_BETTER, margin=0.0),
            Gate("latency_p95", Direction.LOWER_IS_BETTER, 0.1, MarginType.RELATIVE),
        ]
    base = Policy(
        steps=(Step(0.5, mode=mode, min_samples=0, max_duration_s=1e12),), gates=tuple(gates)
    )
    return replace(
        base,
        alpha=ALPHA,
        design_samples=500,
        drift=DriftSettings(enabled=False),
        srm=replace(base.srm, enabled=srm),
    )


def rollout(
    pol: Policy,
    rng: np.random.Generator,
    p_chal: float,
    horizon: int,
    look: int,
    mode: Mode = Mode.CANARY,
    predictions: bool = False,
) -> int | None:
    """Samples per arm at the first rollback (None if none within the horizon)."""
    ev = RolloutEvidence()
    for k, end in enumerate(range(look, horizon + 1, look), start=1):
        champ = rng.random(look) < 0.90
        if mode is Mode.SHADOW:  # challenger right on 30% of the champion's mistakes
            keep = (p_chal - 0.1 * 0.3) / 0.9
            u = rng.random(look)
            ev.add_paired("accuracy", np.where(champ, u < keep, u < 0.3), champ)
        else:
            ev.add_metric("accuracy", Arm.CHALLENGER, rng.random(look) < p_chal)
            ev.add_metric("accuracy", Arm.CHAMPION, champ)
        if predictions:
            for arm in Arm:
                ev.add_predictions(
                    arm, mode, rng.lognormal(2.0, 0.4, look), rng.random(look) < 0.01, 0, 0.5
                )
        if judge(pol, ev, JudgeContext("sim", 0, 0.0, float(k))).action is Action.ROLLBACK:
            return end
    return None


def fixed_horizon(p0: float, p1: float) -> float:
    """Per-arm n of a one-sided pooled two-proportion z-test, alpha 0.05, power 0.8."""
    za, zb = stats.norm.ppf(1 - ALPHA), stats.norm.ppf(0.8)
    pbar = (p0 + p1) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return (num / (p0 - p1)) ** 2


def _bound(rate: float, n: int) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / n)


def test_aa_false_rollback_rate_stays_below_alpha() -> None:
    rng = np.random.default_rng(31)
    trials = 400
    rolled = sum(rollout(policy(), rng, 0.90, 2000, 50) is not None for _ in range(trials))
    assert rolled / trials <= _bound(ALPHA, trials)


def test_aa_with_several_gates_and_srm_stays_below_alpha() -> None:
    rng = np.random.default_rng(32)
    trials = 150
    pol = policy(latency=True, srm=True)
    rolled = sum(
        rollout(pol, rng, 0.90, 1500, 100, predictions=True) is not None for _ in range(trials)
    )
    assert rolled / trials <= _bound(ALPHA, trials)


def test_accuracy_drop_is_caught_and_shadow_needs_fewer_samples() -> None:
    rng = np.random.default_rng(33)
    trials = 100
    canary = [rollout(policy(), rng, 0.85, 2000, 25) for _ in range(trials)]
    shadow = [rollout(policy(Mode.SHADOW), rng, 0.85, 2000, 25, Mode.SHADOW) for _ in range(trials)]
    hits_c = [n for n in canary if n is not None]
    hits_s = [n for n in shadow if n is not None]
    # detection within ~3.7x the fixed-horizon n is ~0.98 (benchmark); 3 se slack
    assert len(hits_c) / trials >= 0.92
    # mean samples to rollback near the fixed-horizon n (expected ratio ~1.0; 3 se slack)
    assert np.mean(hits_c) <= 1.25 * fixed_horizon(0.90, 0.85)
    assert len(hits_s) / trials >= 0.92
    assert np.mean(hits_s) < 0.8 * np.mean(hits_c)
