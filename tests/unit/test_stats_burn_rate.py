"""The burn-rate test: the mixture against a direct binomial computation, the lower bound
agrees with the test, false alarms under the null stay below alpha however often the
judge looks (one filling window, and a whole rollout of sliding windows), and small
samples cannot fire."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from modelcanary.stats.burn_rate import GRID_RATIO, log_evalue, look_alpha, lower_bound


def _max_log_lr(bad: np.ndarray, calls: np.ndarray, limit: float) -> np.ndarray:
    """n KL(bad/n || limit) where bad/n > limit, else 0: the log of the largest likelihood
    ratio, which bounds the mixture. Looks below the threshold need not be computed."""
    p = bad / calls
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * np.log(p / limit), 0.0) + np.where(
            p < 1, (1 - p) * np.log((1 - p) / (1 - limit)), -np.log(1 - limit)
        )
    return np.where(p > limit, calls * kl, 0.0)


def test_log_evalue_matches_the_binomial_mixture() -> None:
    for bad, calls, limit in ((3, 40, 0.0144), (37, 900, 0.02), (0, 100, 0.1), (50, 50, 0.3)):
        total, j = 0.0, 1
        while limit * GRID_RATIO**j < 1:
            p = limit * GRID_RATIO**j
            total += (
                stats.binom.pmf(bad, calls, p) / stats.binom.pmf(bad, calls, limit) / (j * (j + 1))
            )
            j += 1
        assert log_evalue(bad, calls, limit) == pytest.approx(math.log(total), rel=1e-9, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 2_000), st.data())
def test_lower_bound_agrees_with_the_test(calls: int, data: st.DataObject) -> None:
    bad = data.draw(st.integers(0, calls))
    alpha = data.draw(st.sampled_from([0.05, 1e-3, 1e-5]))
    low = lower_bound(bad, calls, alpha)
    assert 0.0 <= low <= bad / calls
    threshold = math.log(1 / alpha)
    if low > 0:
        assert log_evalue(bad, calls, low * (1 - 1e-5)) >= threshold
    if low * (1 + 1e-5) < 1:
        assert log_evalue(bad, calls, min(low * (1 + 1e-5) + 1e-15, 0.999)) < threshold


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.floats(1e-4, 0.5), st.floats(1.01, 1.9))
def test_evidence_decreases_as_the_limit_rises(
    bad: int, good: int, limit: float, factor: float
) -> None:
    higher = min(limit * factor, 0.99)
    assert log_evalue(bad, bad + good, higher) <= log_evalue(bad, bad + good, limit) + 1e-9


def test_a_few_errors_in_a_small_sample_are_not_evidence() -> None:
    # 2 failures in 20 calls at objective 99.9%: a point burn rate of 100x, not shown
    # above 14.4x even at a lenient level.
    assert log_evalue(2, 20, 14.4 * 0.001) < math.log(1 / 0.05)
    assert lower_bound(2, 20, 0.05) < 14.4 * 0.001


def test_a_clear_burn_is_shown_after_a_few_dozen_calls() -> None:
    alpha = look_alpha(0.0125, 10, 180)  # a long rollout's per-look level
    assert log_evalue(15, 50, 14.4 * 0.001) >= math.log(1 / alpha)
    assert lower_bound(15, 50, alpha) > 14.4 * 0.001


def test_one_filling_window_looked_at_after_every_call_keeps_its_level() -> None:
    """Bad share exactly at the limit, the test run after each of 400 calls: alarms in
    at most alpha of the trials (3 standard errors of tolerance)."""
    rng = np.random.default_rng(7)
    trials, limit, alpha, n = 300, 0.05, 0.1, 400
    threshold = math.log(1 / alpha)
    bad = np.cumsum(rng.random((trials, n)) < limit, axis=1)
    calls = np.arange(1, n + 1)
    alarms = 0
    for row in bad:
        looks = np.flatnonzero(_max_log_lr(row, calls, limit) >= threshold)
        alarms += any(log_evalue(int(row[i]), i + 1, limit) >= threshold for i in looks)
    assert alarms / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_sliding_windows_over_a_whole_rollout_keep_the_gate_alpha() -> None:
    """60 s windows of 5 s buckets slid over a 600 s rollout (120 positions), bad share at
    the limit: the share of rollouts with any alarm stays below alpha. Testing each
    position at alpha instead, as a fixed test would, alarms far more often."""
    rng = np.random.default_rng(11)
    trials, limit, alpha, per_bucket, width = 300, 0.05, 0.2, 20, 12
    positions = 120
    bad = rng.binomial(per_bucket, limit, (trials, positions))
    alarms = naive = 0
    for row in bad:
        window = np.convolve(row, np.ones(width, int))[:positions]  # bad calls per window
        n = np.minimum(np.arange(1, positions + 1), width) * per_bucket
        fired = fired_naive = False
        for k in np.flatnonzero(_max_log_lr(window, n, limit) >= math.log(1 / alpha)):
            e = log_evalue(int(window[k]), int(n[k]), limit)
            fired |= e >= math.log(1 / look_alpha(alpha, k, positions))
            fired_naive |= e >= math.log(1 / alpha)
        alarms += fired
        naive += fired_naive
    assert alarms / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert naive > alarms  # the spending is what keeps it: the guard is not vacuous


def test_look_alpha_sums_to_at_most_alpha_over_any_number_of_positions() -> None:
    k = 37
    spent = sum(look_alpha(0.05, i, k) for i in range(200 * k))
    assert spent <= 0.05
    assert spent > 0.049
    assert look_alpha(0.05, 0, k) == look_alpha(0.05, k - 1, k) == 0.05 / (2 * k)
    assert look_alpha(0.05, k, k) == pytest.approx(0.05 / (2 * k) / 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="limit"):
        log_evalue(1, 10, 1.0)
    with pytest.raises(ValueError, match="bad"):
        log_evalue(11, 10, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        lower_bound(1, 10, 0.0)
