"""Normal-mixture boundaries: shape, closed form against the mixture integral, and
time-uniform coverage under the null (simulated, with a stated tolerance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from modelcanary.stats.confidence_sequences import (
    MixtureDesign,
    boundary,
    contrast_bounds,
    radius,
    samples_to_exclude,
)


@pytest.mark.parametrize("t", [1.0, 50.0, 1000.0, 1e5])
def test_boundary_solves_the_mixture_martingale(t: float) -> None:
    """At S = b(t) the mixture of exp(l S - l^2 t / 2) over N(l0, 1/rho) equals 1/alpha."""
    alpha, design = 0.05, MixtureDesign(400, spread=0.5)
    rho, l0 = design.parameters(alpha)
    s = boundary(t, alpha, design)
    prior = stats.norm(l0, 1 / math.sqrt(rho))
    lo, hi = prior.ppf(1e-12), prior.ppf(1 - 1e-12)
    value, _ = integrate.quad(
        lambda lam: math.exp(lam * s - lam * lam * t / 2) * prior.pdf(lam), lo, hi, limit=200
    )
    assert value == pytest.approx(1 / alpha, rel=1e-6)


def test_radius_shrinks_and_is_tightest_near_design() -> None:
    design = MixtureDesign(1000)
    t = np.array([10.0, 100.0, 1000.0, 1e4, 1e6])
    r = radius(1.0, t, 0.05, design)
    assert np.all(np.diff(r) < 0)
    other = MixtureDesign(50)
    assert radius(1.0, 1000.0, 0.05, design) < radius(1.0, 1000.0, 0.05, other)
    assert radius(1.0, 1000.0, 0.01, design) > radius(1.0, 1000.0, 0.05, design)


def test_samples_to_exclude_matches_radius() -> None:
    design = MixtureDesign(400)
    t = samples_to_exclude(0.05, 0.3, 0.05, design)
    assert t is not None
    assert radius(0.3, t, 0.05, design) <= 0.05 < radius(0.3, t * 0.99, 0.05, design)
    assert samples_to_exclude(0.0, 0.3, 0.05, design) is None


def test_contrast_bounds_bracket_the_estimate() -> None:
    b = contrast_bounds(0.1, 0.5, 200.0, 0.05, 0.01, MixtureDesign(400))
    assert b.lower < 0.1 < b.upper
    assert (b.upper - 0.1) > (0.1 - b.lower)  # smaller alpha, wider side


def test_time_uniform_coverage_under_the_null() -> None:
    """Gaussian random walks looked at after every sample for 4x the design size: the
    one-sided crossing rate stays below alpha (Ville). Tolerance: 3 standard errors."""
    rng = np.random.default_rng(11)
    trials, horizon, alpha = 4000, 1600, 0.05
    design = MixtureDesign(400)
    b = boundary(np.arange(1, horizon + 1), alpha, design)
    crossed = np.zeros(trials, bool)
    for chunk in range(0, trials, 1000):
        walks = np.cumsum(rng.standard_normal((1000, horizon)), axis=1)
        crossed[chunk : chunk + 1000] = (walks >= b).any(axis=1)
    rate = crossed.mean()
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert rate > 0.01  # and the boundary is not absurdly conservative


def test_design_validation() -> None:
    with pytest.raises(ValueError):
        MixtureDesign(0)
    with pytest.raises(ValueError):
        boundary(10.0, 1.5, MixtureDesign(10))
