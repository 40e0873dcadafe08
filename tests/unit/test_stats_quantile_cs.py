"""Quantile confidence sequences: wider than the fixed-n binomial bound (oracle), and
time-uniform coverage under repeated looks (simulated, stated tolerance)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from modelcanary.stats.quantile_cs import log_evalue_above, lower_rank, upper_rank


@pytest.mark.parametrize("n", [200, 1000, 10_000])
def test_ranks_are_outside_the_fixed_sample_binomial_interval(n: int) -> None:
    p, alpha = 0.95, 0.025
    lo, hi = lower_rank(n, p, alpha), upper_rank(n, p, alpha)
    assert lo is not None and hi is not None
    assert hi >= stats.binom.ppf(1 - alpha, n, p)
    assert lo <= stats.binom.ppf(alpha, n, p) + 1
    assert lo < n * p < hi


def test_no_bound_until_enough_data_for_a_high_quantile() -> None:
    assert upper_rank(20, 0.99, 0.01) is None
    assert upper_rank(5000, 0.99, 0.01) is not None


def test_evalue_is_increasing_in_the_count() -> None:
    values = [log_evalue_above(k, 500, 0.5) for k in range(250, 400, 10)]
    assert all(b > a for a, b in itertools.pairwise(values))


def test_time_uniform_coverage_of_the_p95() -> None:
    """Exponential samples, bounds recomputed every 25 samples up to 2,000: the share of
    runs where q_0.95 ever leaves [lower, upper] stays below 2 alpha (two sides).
    Tolerance: 3 standard errors."""
    rng = np.random.default_rng(12)
    trials, horizon, p, alpha = 300, 2000, 0.95, 0.05
    q = -math.log(1 - p)
    looks = range(25, horizon + 1, 25)
    ranks = [(n, lower_rank(n, p, alpha), upper_rank(n, p, alpha)) for n in looks]
    missed = 0
    for _ in range(trials):
        x = rng.exponential(1.0, horizon)
        below = np.cumsum(x < q)  # count of samples below the true quantile
        for n, lo, hi in ranks:
            # q < X_(lo) iff fewer than lo samples are <= q; q > X_(hi) iff >= hi are below q
            if (lo is not None and below[n - 1] < lo) or (hi is not None and below[n - 1] >= hi):
                missed += 1
                break
    rate = missed / trials
    assert rate <= 2 * alpha + 3 * math.sqrt(2 * alpha * (1 - 2 * alpha) / trials)
