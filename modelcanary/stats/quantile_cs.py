"""Anytime-valid bounds for a quantile, as ranks of order statistics.

Howard & Ramdas (2022), "Sequential estimation of quantiles with applications to
A/B-testing and best-arm identification", Bernoulli 28(3), section 2 (fixed quantile).
For i.i.d. X_1, X_2, ... and q = F^{-1}(p), the count ``B_n = #{i <= n: X_i < q}`` is
Binomial(n, <= p). If the k-th order statistic X_(k) lies below q then B_n >= k, so any
sequence k_n with ``P(exists n: B_n >= k_n) <= alpha`` makes ``X_(k_n)`` an upper
confidence sequence for q; symmetrically for a lower one.

The sequence k_n comes from a one-sided beta-binomial mixture test martingale: mixing
the likelihood ratio ``(theta/p)^B ((1-theta)/(1-p))^(n-B)`` over a Beta(c p, c (1-p))
prior truncated to theta > p (theta < p for the lower bound) gives, with ``a' = c p + B``
and ``b' = c (1-p) + n - B``,

    E+_n(B) = Beta(a', b') (1 - I_p(a', b')) / (Beta(c p, c (1-p)) (1 - I_p(c p, c (1-p))))
              / (p^B (1-p)^(n-B)),

increasing in B, a martingale under the null, so by Ville ``P(exists n: E+_n >= 1/alpha)
<= alpha``; k_n is the least B with ``E+_n(B) >= 1/alpha``. The bound is exact for every
n (no normal approximation) and needs no assumption on F beyond independence.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.special import betainc, betaincc, betaln

DEFAULT_PRIOR_STRENGTH = 20.0


def _log(x: float) -> float:
    return math.log(x) if x > 0.0 else -math.inf


def _log_evalue(count: int, n: int, p: float, strength: float, tail: Any) -> float:
    """Beta-binomial mixture e-value with the prior truncated by ``tail`` (a regularised
    incomplete beta: ``betaincc`` keeps mass above p, ``betainc`` below)."""
    a, b = strength * p, strength * (1.0 - p)
    a2, b2 = a + count, b + (n - count)
    return (
        betaln(a2, b2)
        + _log(float(tail(a2, b2, p)))
        - betaln(a, b)
        - _log(float(tail(a, b, p)))
        - count * math.log(p)
        - (n - count) * math.log1p(-p)
    )


def log_evalue_above(
    count: int, n: int, p: float, strength: float = DEFAULT_PRIOR_STRENGTH
) -> float:
    """log E+_n(count): evidence that P(X < q) > p after ``count`` of ``n`` fell below q."""
    return _log_evalue(count, n, p, strength, betaincc)


def log_evalue_below(
    count: int, n: int, p: float, strength: float = DEFAULT_PRIOR_STRENGTH
) -> float:
    """log E-_n(count): evidence that P(X <= q) < p after ``count`` of ``n`` were <= q."""
    return _log_evalue(count, n, p, strength, betainc)


def upper_rank(
    n: int, p: float, alpha: float, strength: float = DEFAULT_PRIOR_STRENGTH
) -> int | None:
    """k such that ``q_p <= X_(k)`` holds for all n with probability >= 1 - alpha;
    None while no order statistic is high enough yet (the bound is +infinity)."""
    target = math.log(1.0 / alpha)
    if n < 1 or log_evalue_above(n, n, p, strength) < target:
        return None
    lo, hi = max(math.floor(n * p), 0), n  # E+(lo) < target (at or below the mean), E+(hi) >= it
    if log_evalue_above(lo, n, p, strength) >= target:
        return max(lo, 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if log_evalue_above(mid, n, p, strength) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def lower_rank(
    n: int, p: float, alpha: float, strength: float = DEFAULT_PRIOR_STRENGTH
) -> int | None:
    """k such that ``q_p >= X_(k)`` holds for all n with probability >= 1 - alpha;
    None while no order statistic is low enough yet (the bound is -infinity)."""
    target = math.log(1.0 / alpha)
    if n < 1 or log_evalue_below(0, n, p, strength) < target:
        return None
    lo, hi = 0, min(math.ceil(n * p), n)  # E-(lo) >= target, E-(hi) < target
    if log_evalue_below(hi, n, p, strength) >= target:
        return hi + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if log_evalue_below(mid, n, p, strength) >= target:
            lo = mid
        else:
            hi = mid
    return lo + 1
