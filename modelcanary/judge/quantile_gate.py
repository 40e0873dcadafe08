"""Quantile gates (latency p50/p95/p99): per-arm anytime-valid bounds, combined.

For each arm, :mod:`modelcanary.stats.quantile_cs` gives order-statistic ranks whose
values bound the arm's p-quantile at any time; the latency sketch turns a rank into a
value, rounding outwards (lower bucket edge for lower bounds, upper edge for upper
bounds). The tolerated challenger quantile given the champion's is

    absolute m:            q_0 + m
    relative r:            (1 + r) q_0
    relative r, floor f:   max((1 + r) q_0, q_0 + f)

(increasing in q_0). pass when ``upper(q_c) <= tolerated(lower(q_0))``; fail when
``lower(q_c) > tolerated(upper(q_0))``. Each side spends the gate's alpha, split
equally between the two arms' bounds (a union bound, so the arms' samples need not be
independent: in shadow mode they answer the same requests).
"""

from __future__ import annotations

import math

from modelcanary.events import Arm
from modelcanary.judge.evidence import RolloutEvidence
from modelcanary.judge.verdicts import GateContext, GateVerdict, Verdict, fmt
from modelcanary.policy import Gate, MarginType
from modelcanary.stats.quantile_cs import lower_rank, upper_rank
from modelcanary.stats.quantiles import LogHistogram


def tolerated(gate: Gate, champion: float) -> float:
    if not math.isfinite(champion):
        return champion
    if gate.margin_type is MarginType.ABSOLUTE:
        return champion + gate.margin
    return max((1.0 + gate.margin) * champion, champion + gate.min_margin)


def _margin_text(gate: Gate) -> str:
    if gate.margin_type is MarginType.ABSOLUTE:
        return f"+{gate.margin:g} ms"
    floor = f", at least +{gate.min_margin:g} ms" if gate.min_margin else ""
    return f"+{gate.margin:.0%}{floor}"


def bounds(sketch: LogHistogram, p: float, alpha: float) -> tuple[float, float]:
    """Anytime-valid (lower, upper) of the p-quantile at level alpha per side."""
    n = sketch.n
    lo = lower_rank(n, p, alpha)
    hi = upper_rank(n, p, alpha)
    lower = 0.0 if lo is None else sketch.order_statistic(lo, "lower")
    upper = math.inf if hi is None else sketch.order_statistic(hi, "upper")
    return lower, upper


def evaluate_quantile(ctx: GateContext, evidence: RolloutEvidence) -> GateVerdict:
    gate = ctx.gate
    p = gate.spec.quantile
    assert p is not None
    chal = evidence.latency_sketch(ctx.mode, Arm.CHALLENGER)
    champ = evidence.latency_sketch(ctx.mode, Arm.CHAMPION)
    base = {
        "gate": gate.label,
        "metric": gate.metric,
        "critical": gate.critical,
        "margin": _margin_text(gate),
        "alpha": ctx.alpha,
        "method": "order-statistic confidence sequences (beta-binomial mixture), per arm",
        "samples": {Arm.CHALLENGER.value: chal.n, Arm.CHAMPION.value: champ.n},
    }
    if chal.n == 0 or champ.n == 0:
        return GateVerdict(
            verdict=Verdict.NO_DATA, reason=f"{gate.label}: no latencies from both arms yet", **base
        )
    per_arm = ctx.alpha / 2.0
    lo_c, hi_c = bounds(chal, p, per_arm)
    lo_0, hi_0 = bounds(champ, p, per_arm)
    q_c, q_0 = chal.quantile(p), champ.quantile(p)
    estimate = q_c - q_0
    interval = (lo_c - hi_0, hi_c - lo_0)
    allowed = tolerated(gate, q_0)
    common = {
        **base,
        "estimate": estimate,
        "interval": interval,
        "champion": q_0,
        "challenger": q_c,
        "details": {
            "challenger_bounds": [lo_c, hi_c if math.isfinite(hi_c) else None],
            "champion_bounds": [lo_0, hi_0 if math.isfinite(hi_0) else None],
            "tolerated": allowed,
            "relative_difference": estimate / q_0 if q_0 > 0 else None,
            "sketch_relative_accuracy": chal.relative_accuracy,
        },
    }
    shown = f"challenger {q_c:.3g} ms vs champion {q_0:.3g} ms (tolerated {allowed:.3g} ms)"
    if lo_c > tolerated(gate, hi_0):
        return GateVerdict(
            verdict=Verdict.FAIL,
            reason=f"{gate.label}: {shown}; worse than the {_margin_text(gate)} margin",
            **common,
        )
    if hi_c <= tolerated(gate, lo_0):
        return GateVerdict(
            verdict=Verdict.PASS,
            reason=f"{gate.label}: {shown}; within the {_margin_text(gate)} margin",
            **common,
        )
    if not math.isfinite(hi_c):
        more = _samples_for_a_bound(chal.n, p, per_arm)
    else:
        more = _samples_needed(gate, chal.n, q_c, q_0, (lo_c, hi_c), (lo_0, hi_0))
    suggestion = (
        "no verdict in sight at the current estimate"
        if more is None
        else (f"about {more} more challenger samples")
    )
    interval_text = f"difference {fmt(estimate)} ms in [{fmt(interval[0])}, {fmt(interval[1])}]"
    return GateVerdict(
        verdict=Verdict.INCONCLUSIVE,
        reason=f"{gate.label}: {shown}, {interval_text}; not conclusive yet ({suggestion})",
        samples_needed=more,
        **common,
    )


def _samples_for_a_bound(n: int, p: float, alpha: float) -> int | None:
    """More samples before the challenger's upper bound becomes finite at all."""
    m = max(n, 1)
    while upper_rank(m, p, alpha) is None:
        m = math.ceil(m * 1.25) + 1
        if m > 10_000_000:
            return None
    lo = max(n, 1)
    while m - lo > 1:  # bisect to the first n with a finite bound
        mid = (lo + m) // 2
        if upper_rank(mid, p, alpha) is None:
            lo = mid
        else:
            m = mid
    return max(m - n, 1)


def _samples_needed(
    gate: Gate,
    n: int,
    q_c: float,
    q_0: float,
    b_c: tuple[float, float],
    b_0: tuple[float, float],
) -> int | None:
    """Rough: bound widths shrink like 1/sqrt(n), so the uncertainty must fall below the
    room between the estimate and the tolerance."""
    room = tolerated(gate, q_0) - q_c
    if room == 0.0 or not all(math.isfinite(x) for x in (*b_c, *b_0)):
        return None
    if room > 0:  # heading for pass: upper(q_c) and lower(q_0) must close in
        spread = (b_c[1] - q_c) + (tolerated(gate, q_0) - tolerated(gate, b_0[0]))
    else:
        spread = (q_c - b_c[0]) + (tolerated(gate, b_0[1]) - tolerated(gate, q_0))
    factor = (spread / abs(room)) ** 2
    return max(math.ceil(n * (factor - 1.0)), 1)
