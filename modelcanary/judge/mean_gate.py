"""Mean gates: compare the arms' means of a per-request metric, anytime-valid.

The gate is a linear contrast of the two means, oriented so that T > 0 is acceptable:

    higher_is_better, absolute m:  T = mu_c - mu_0 + m
    higher_is_better, relative r:  T = mu_c - (1 - r) mu_0
    lower_is_better,  absolute m:  T = mu_0 - mu_c + m
    lower_is_better,  relative r:  T = (1 + r) mu_0 - mu_c       (rmse: (1 + r)^2 on mse)

pass when the anytime-valid lower bound of T is > 0 (non-inferiority within the margin
shown), fail when the upper bound is < 0 (worse than the margin shown), each side at
the gate's share of alpha (:mod:`modelcanary.stats.confidence_sequences`).

Canary (two-sample): per step s, ``T_s = a m_cs - b m_0s + k`` with variance
``V_s = a^2 s_c^2 / n_cs + b^2 s_0^2 / n_0s``; steps combine with weights 1/V_s, so a
change of traffic mix between steps cannot bias the estimate. The information
``I = sum 1/V_s`` is expressed in effective samples per arm ``t = sigma_T^2 I`` with
``sigma_T^2 = a^2 s_c^2 + b^2 s_0^2`` (t is the per-arm size of a balanced design with
the same precision). Shadow (paired): ``d_i = a x_ci - b x_0i + k`` per request, t = n.

Variances of bounded metrics (accuracy, error rate, Brier) get one pseudo-observation
at the largest possible variance, ``(M2 + h^2) / n`` for a range of half-width h, so that
two arms with no errors yet do not look infinitely precise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelcanary.events import Arm, Mode
from modelcanary.judge.evidence import ArmStats, RolloutEvidence
from modelcanary.judge.verdicts import GateContext, GateVerdict, Verdict, fmt
from modelcanary.policy import Direction, Gate, MarginType
from modelcanary.stats.confidence_sequences import (
    MixtureDesign,
    contrast_bounds,
    samples_to_exclude,
)
from modelcanary.stats.moments import CoMoments

PREDICTION_METRICS = frozenset({"error_rate", "latency_mean"})


@dataclass(frozen=True)
class Contrast:
    """T = a mu_challenger - b mu_champion + k; T > 0 is acceptable."""

    a: float
    b: float
    k: float


def gate_contrast(gate: Gate) -> Contrast:
    r = gate.margin
    power = 2.0 if gate.metric == "rmse" else 1.0
    if gate.direction is Direction.HIGHER_IS_BETTER:
        if gate.margin_type is MarginType.ABSOLUTE:
            return Contrast(1.0, 1.0, r)
        return Contrast(1.0, (1.0 - r) ** power, 0.0)
    if gate.margin_type is MarginType.ABSOLUTE:
        return Contrast(-1.0, -1.0, r)
    return Contrast(-1.0, -((1.0 + r) ** power), 0.0)


DIFFERENCE = Contrast(1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Estimate:
    """A contrast's estimate, per-sample standard deviation and effective samples."""

    value: float
    sigma: float
    t: float
    n_challenger: int
    n_champion: int
    mean_challenger: float
    mean_champion: float


def _variance(stats: ArmStats | None, half_range: float | None) -> float:
    if stats is None or stats.n == 0:
        return 0.0
    m2 = stats.variance * (stats.n - 1)
    if half_range is None:
        return stats.variance
    return (m2 + half_range * half_range) / stats.n


def _pooled(strata: dict[int, tuple[ArmStats, ArmStats]], index: int) -> ArmStats | None:
    pooled = None
    for pair in strata.values():
        pooled = pair[index].copy() if pooled is None else pooled.merge(pair[index])
    return pooled


def two_sample_estimate(
    strata: dict[int, tuple[ArmStats, ArmStats]], c: Contrast, half_range: float | None
) -> Estimate | None:
    """Inverse-variance combination of per-step contrasts (None without data)."""
    usable = {s: p for s, p in strata.items() if p[0].n > 0 and p[1].n > 0}
    if not usable:
        return None
    chal, champ = _pooled(usable, 0), _pooled(usable, 1)
    assert chal is not None and champ is not None
    var_c, var_0 = _variance(chal, half_range), _variance(champ, half_range)
    sigma2 = c.a * c.a * var_c + c.b * c.b * var_0
    weighted, info = 0.0, 0.0
    for x, y in usable.values():
        v = c.a * c.a * var_c / x.n + c.b * c.b * var_0 / y.n
        if v <= 0.0:
            continue
        weighted += (c.a * x.mean - c.b * y.mean + c.k) / v
        info += 1.0 / v
    if info == 0.0:
        value = c.a * chal.mean - c.b * champ.mean + c.k
        return Estimate(value, 0.0, 0.0, chal.n, champ.n, chal.mean, champ.mean)
    return Estimate(
        weighted / info, math.sqrt(sigma2), sigma2 * info, chal.n, champ.n, chal.mean, champ.mean
    )


def paired_estimate(
    strata: dict[int, CoMoments], c: Contrast, half_range: float | None
) -> Estimate | None:
    pooled = CoMoments()
    for cm in strata.values():
        pooled.merge(cm)
    n = pooled.n
    if n == 0:
        return None
    var = pooled.combination_variance(c.a, c.b)
    if half_range is not None:
        h = (abs(c.a) + abs(c.b)) * half_range
        var = (var * (n - 1) + h * h) / n
    value = c.a * pooled.mean_x - c.b * pooled.mean_y + c.k
    return Estimate(value, math.sqrt(var), float(n), n, n, pooled.mean_x, pooled.mean_y)


def _margin_text(gate: Gate) -> str:
    if gate.margin_type is MarginType.RELATIVE:
        return f"{gate.margin:.0%} relative"
    return f"{gate.margin:g} absolute"


def evaluate_mean(ctx: GateContext, evidence: RolloutEvidence) -> GateVerdict:
    gate = ctx.gate
    spec = gate.spec
    data_metric = "mse" if gate.metric == "rmse" else gate.metric
    paired = ctx.mode is Mode.SHADOW and data_metric not in PREDICTION_METRICS
    contrast = gate_contrast(gate)
    if paired:
        strata_p = evidence.paired_strata(data_metric)
        est = paired_estimate(strata_p, contrast, spec.half_range)
        diff = paired_estimate(strata_p, DIFFERENCE, spec.half_range)
        method = "paired asymptotic confidence sequence"
    else:
        strata = evidence.arm_strata(data_metric, ctx.mode)
        est = two_sample_estimate(strata, contrast, spec.half_range)
        diff = two_sample_estimate(strata, DIFFERENCE, spec.half_range)
        method = "two-sample asymptotic confidence sequence, stratified by step"
    base = {
        "gate": gate.label,
        "metric": gate.metric,
        "critical": gate.critical,
        "margin": _margin_text(gate),
        "alpha": ctx.alpha,
        "method": method,
    }
    if est is None or diff is None:
        return GateVerdict(
            verdict=Verdict.NO_DATA,
            reason=f"{gate.label}: no {'paired ' if paired else ''}data from both arms yet",
            **base,
        )
    samples = {Arm.CHALLENGER.value: est.n_challenger, Arm.CHAMPION.value: est.n_champion}
    transform = math.sqrt if gate.metric == "rmse" else (lambda x: x)
    mean_c, mean_0 = transform(est.mean_challenger), transform(est.mean_champion)
    design = MixtureDesign(ctx.design_samples)
    bounds = contrast_bounds(est.value, est.sigma, est.t, ctx.alpha, ctx.alpha, design)
    dbounds = contrast_bounds(diff.value, diff.sigma, diff.t, ctx.alpha, ctx.alpha, design)
    interval = None if gate.metric == "rmse" else (dbounds.lower, dbounds.upper)
    estimate = mean_c - mean_0 if gate.metric == "rmse" else diff.value
    common = {
        **base,
        "estimate": estimate,
        "interval": interval,
        "champion": mean_0,
        "challenger": mean_c,
        "samples": samples,
        "details": {
            "contrast": {
                "estimate": est.value,
                "lower": bounds.lower if est.t > 0 else None,
                "upper": bounds.upper if est.t > 0 else None,
                "effective_samples": est.t,
                "sigma": est.sigma,
                "meaning": "> 0 means within the margin",
            },
            "design_samples": ctx.design_samples,
        },
    }
    shown = f"challenger {mean_c:.4g} vs champion {mean_0:.4g}" + (
        ""
        if interval is None
        else f", difference {fmt(estimate)} in [{fmt(interval[0])}, {fmt(interval[1])}]"
    )
    low = min(est.n_challenger, est.n_champion)
    if low < ctx.min_samples_per_arm:
        return GateVerdict(
            verdict=Verdict.INCONCLUSIVE,
            reason=f"{gate.label}: {low} samples in the smaller arm, "
            f"{ctx.min_samples_per_arm} needed before judging",
            samples_needed=max(ctx.min_samples_per_arm - est.n_challenger, 0) or None,
            **common,
        )
    if est.t <= 0.0 or est.sigma <= 0.0:
        return GateVerdict(
            verdict=Verdict.INCONCLUSIVE,
            reason=f"{gate.label}: {shown}; no variation in the data yet",
            **common,
        )
    if bounds.upper < 0.0:
        return GateVerdict(
            verdict=Verdict.FAIL,
            reason=f"{gate.label}: {shown}; worse than the {_margin_text(gate)} margin",
            **common,
        )
    if bounds.lower > 0.0:
        return GateVerdict(
            verdict=Verdict.PASS,
            reason=f"{gate.label}: {shown}; within the {_margin_text(gate)} margin",
            **common,
        )
    needed = samples_to_exclude(est.value, est.sigma, ctx.alpha, design)
    more = None if needed is None else max(math.ceil(est.n_challenger * (needed / est.t - 1.0)), 1)
    suggestion = (
        "no verdict in sight at the current estimate"
        if more is None
        else (f"about {more} more challenger samples")
    )
    return GateVerdict(
        verdict=Verdict.INCONCLUSIVE,
        reason=f"{gate.label}: {shown}; not conclusive yet ({suggestion})",
        samples_needed=more,
        **common,
    )
