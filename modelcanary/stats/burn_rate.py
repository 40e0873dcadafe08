"""Is an error budget burning? An anytime-valid test of a bad-call share above a limit.

An SLO with objective o (say 99.9% of calls succeed) leaves an error budget of 1 - o
bad calls. Over a window of n calls with x bad ones the *burn rate* is

    burn = (x / n) / (1 - o),

and the SRE workbook (Beyer et al. 2018, "The Site Reliability Workbook", ch. 5,
"Alerting on SLOs") alerts when it exceeds a multiple m in a long and a short window.
The judge halts a rollout only when the data *show* that the challenger's bad share in
the long window exceeds ``q = m (1 - o)``; the point burn rate alone would let 2
failures in 20 calls (burn 100x at 99.9%) halt a healthy rollout.

Test. H0: every call in the window is bad with probability at most q (given the calls
before it). For any p' > q the likelihood ratio

    LR_n(p') = (p'/q)^x ((1 - p') / (1 - q))^(n - x)

is a non-negative supermartingale under H0 (one call multiplies it by p (p'/q) + (1-p)
(1-p')/(1-q), which is linear in p and equals 1 at p = q), and so is any mixture of
such ratios with weights summing to at most 1. We mix over a geometric grid
``p'_j = q r^j`` (r = 1.5, j = 1, 2, ... while p'_j < 1) with weights 1 / (j (j+1)):

    E_n(q) = sum_j LR_n(q r^j) / (j (j + 1)).

The grid is scale-free (a burn 1.5x, 2.25x, ... the limit each has its own term) and
its weights favour burns just above the limit, where evidence is hardest to get. By
Ville's inequality ``P(exists n: E_n(q) >= 1/a) <= a`` under H0: the test stays valid
however often the judge looks while the window fills (Ramdas, Grunwald, Vovk & Shafer
2023, "Game-theoretic statistics and safe anytime-valid inference", Statist. Sci.;
the mixture of likelihood ratios goes back to Robbins 1970). Compared with a one-look
exact binomial test at the same level it needs about 1.5x the calls near the limit
and the same order far above it (a 30% failure rate at q = 1.44% is shown after about
20 calls) — the price of not caring how often the judge looks.

Lower bound. Every term of E_n(q) decreases in q and terms drop out as q grows, so
E_n(q) decreases in q and ``{q : E_n(q) >= 1/a}`` is an interval (0, L): L is a lower
confidence bound of the bad share at level a, and ``E_n(q) >= 1/a`` iff ``L >= q``.

Sliding windows. The window moves with time: each look at a new window position is a
new test. :func:`look_alpha` spends the budget over positions: with K positions in
the rollout's planned length, each of the first K gets ``a / (2K)`` and the positions
of the m-th overflow epoch of K (a rollout that ran longer than planned, paused and
resumed) get ``a / (2K m (m+1))``; these sum to at most a over any number of
positions, so by a union bound a challenger whose bad share never exceeds the limit
is halted with probability at most a in the whole rollout.
"""

from __future__ import annotations

import math

GRID_RATIO = 1.5


def log_evalue(bad: int, calls: int, limit: float, ratio: float = GRID_RATIO) -> float:
    """log E_n(limit): evidence that the bad share exceeds ``limit`` (<= 0 without any)."""
    if not 0.0 < limit < 1.0:
        raise ValueError(f"limit {limit} must be in (0, 1)")
    if not 0 <= bad <= calls:
        raise ValueError(f"bad {bad} must be in [0, calls={calls}]")
    good = calls - bad
    log_ratio = math.log(ratio)
    base = math.log1p(-limit)
    terms = []
    j = 1
    p = limit * ratio
    while p < 1.0:
        terms.append(-math.log(j * (j + 1)) + bad * j * log_ratio + good * (math.log1p(-p) - base))
        j += 1
        p *= ratio
    if not terms:
        return -math.inf
    top = max(terms)
    if top == -math.inf:
        return top
    return top + math.log(math.fsum(math.exp(t - top) for t in terms))


def lower_bound(bad: int, calls: int, alpha: float, ratio: float = GRID_RATIO) -> float:
    """L: the bad share is at least L with confidence 1 - alpha (0 when nothing shows it).

    ``log_evalue(bad, calls, q) >= log(1/alpha)`` exactly when ``q <= L`` (up to the
    bisection's relative tolerance of 1e-6).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} must be in (0, 1)")
    if bad == 0 or calls == 0:
        return 0.0
    threshold = math.log(1.0 / alpha)
    lo, hi = 1e-12, bad / calls  # E(bad/calls) <= 1 < 1/alpha: the MLE is never rejected
    if hi >= 1.0:
        hi = 1.0 - 1e-12
    if log_evalue(bad, calls, lo, ratio) < threshold:
        return 0.0
    while hi / lo > 1.0 + 1e-6:
        mid = math.sqrt(lo * hi)
        if log_evalue(bad, calls, mid, ratio) >= threshold:
            lo = mid
        else:
            hi = mid
    return lo


def look_alpha(alpha: float, position: int, positions_per_epoch: int) -> float:
    """The level of the test at window position ``position`` (0, 1, ...): ``alpha / (2K)``
    in the planned epoch of K positions, ``alpha / (2K m (m+1))`` in overflow epoch m."""
    if positions_per_epoch < 1:
        raise ValueError(f"positions_per_epoch {positions_per_epoch} must be >= 1")
    epoch = max(position, 0) // positions_per_epoch
    share = alpha / (2.0 * positions_per_epoch)
    return share if epoch == 0 else share / (epoch * (epoch + 1))
