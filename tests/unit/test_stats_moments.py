"""Moments, CoMoments and Bernoulli: oracle (numpy/scipy), merge property, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from modelcanary.stats.bernoulli import Bernoulli
from modelcanary.stats.moments import CoMoments, Moments

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_moments_match_scipy_on_raw_samples() -> None:
    x = np.random.default_rng(1).lognormal(3.0, 1.0, 5000)
    m = Moments()
    for v in x:
        m.update(float(v))
    d = stats.describe(x)
    assert m.n == d.nobs
    assert m.mean == pytest.approx(d.mean, rel=1e-12)
    assert m.variance == pytest.approx(d.variance, rel=1e-10)
    assert m.population_variance == pytest.approx(np.var(x), rel=1e-10)


def test_update_returns_self_and_update_many_equals_updates() -> None:
    m = Moments()
    assert m.update(1.0) is m
    x = np.random.default_rng(2).normal(size=300)
    a, b = Moments().update_many(x), Moments()
    for v in x:
        b.update(float(v))
    assert (a.n, a.mean, a.variance) == pytest.approx((b.n, b.mean, b.variance), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, max_size=60), st.lists(finite, max_size=60))
def test_moments_merge_of_parts_equals_one_pass(xs: list[float], ys: list[float]) -> None:
    left, right, whole = Moments(), Moments(), Moments()
    for v in xs:
        left.update(v)
    for v in ys:
        right.update(v)
    for v in xs + ys:
        whole.update(v)
    merged = left.copy().merge(right)
    assert merged.n == whole.n
    scale = 1.0 + max((abs(v) for v in xs + ys), default=0.0)
    assert merged.mean == pytest.approx(whole.mean, abs=1e-9 * scale) if whole.n else True
    assert merged.variance == pytest.approx(whole.variance, rel=1e-7, abs=1e-7 * scale * scale)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, finite), max_size=60), st.integers(0, 60))
def test_comoments_merge_of_parts_equals_one_pass(
    pairs: list[tuple[float, float]], cut: int
) -> None:
    whole, left, right = CoMoments(), CoMoments(), CoMoments()
    for i, (x, y) in enumerate(pairs):
        whole.update(x, y)
        (left if i < cut else right).update(x, y)
    merged = left.copy().merge(right)
    scale = 1.0 + max((max(abs(x), abs(y)) for x, y in pairs), default=0.0)
    assert merged.n == whole.n
    for a, b in ((1.0, 1.0), (1.0, 0.5), (-1.0, -1.3)):
        assert merged.combination_variance(a, b) == pytest.approx(
            whole.combination_variance(a, b), rel=1e-6, abs=1e-6 * scale * scale
        )


def test_comoments_match_numpy_covariance() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=2000)
    y = 0.7 * x + rng.normal(size=2000)
    cm = CoMoments().update_many(x, y)
    cov = np.cov(x, y, ddof=1)
    assert cm.variance_x == pytest.approx(cov[0, 0], rel=1e-10)
    assert cm.variance_y == pytest.approx(cov[1, 1], rel=1e-10)
    assert cm.covariance == pytest.approx(cov[0, 1], rel=1e-10)
    assert cm.combination_variance(2.0, 0.5) == pytest.approx(np.var(2 * x - 0.5 * y, ddof=1))


def test_bernoulli_oracle_and_exact_merge() -> None:
    x = np.random.default_rng(4).random(1001) < 0.3
    b = Bernoulli().update_many(x[:400]).merge(Bernoulli().update_many(x[400:]))
    assert b == Bernoulli().update_many(x)
    assert b.mean == pytest.approx(x.mean())
    assert b.variance == pytest.approx(np.var(x.astype(float), ddof=1))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=80), st.integers(0, 80))
def test_bernoulli_merge_property(values: list[bool], cut: int) -> None:
    whole = Bernoulli().update_many(values)
    parts = Bernoulli().update_many(values[:cut]).merge(Bernoulli().update_many(values[cut:]))
    assert parts == whole


@pytest.mark.parametrize(
    "acc",
    [
        Moments().update_many([1.0, 2.0, 4.0]),
        CoMoments().update_many([1.0, 2.0], [3.0, 5.0]),
        Bernoulli().update_many([True, False, True]),
    ],
    ids=["moments", "comoments", "bernoulli"],
)
def test_pickling_round_trips(acc: object) -> None:
    back = pickle.loads(pickle.dumps(acc))
    assert back.__getstate__() == acc.__getstate__()  # type: ignore[attr-defined]


def test_bernoulli_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        Bernoulli(3, 4)
