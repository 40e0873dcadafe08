"""SRM test: closed form against numeric integration, null and mismatch behaviour,
mergeable unit counting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from modelcanary.stats.srm import RatioCounts, log_evalue, srm_test, unit_hash


def test_log_evalue_matches_the_beta_binomial_integral() -> None:
    x, n, f, k = 37, 500, 0.05, 100.0
    prior = stats.beta(k * f, k * (1 - f))
    null = x * math.log(f) + (n - x) * math.log1p(-f)

    def ratio(t: float) -> float:
        return math.exp(x * math.log(t) + (n - x) * math.log1p(-t) + prior.logpdf(t) - null)

    value, _ = integrate.quad(ratio, 0, 1, points=[f, x / n], limit=500, epsabs=0, epsrel=1e-12)
    assert log_evalue(x, n, f, k) == pytest.approx(math.log(value), rel=1e-9)


def _stratum(x: int, n: int) -> dict[str, tuple[float, RatioCounts]]:
    counts = RatioCounts()
    counts.requests_challenger, counts.requests_total = x, n
    return {"step 0": (0.05, counts)}


def test_detects_a_routing_bug_and_not_a_correct_split() -> None:
    assert srm_test(_stratum(1000, 10_000), 0.01, 1000.0).detected  # 10% instead of 5%
    assert not srm_test(_stratum(510, 10_000), 0.01, 1000.0).detected


def test_false_alarm_rate_under_correct_routing_with_repeated_looks() -> None:
    """Binomial(5%) arrivals looked at every 200 units up to 20,000: alarm rate <= alpha.
    Tolerance: 3 standard errors."""
    rng = np.random.default_rng(13)
    trials, alpha = 2000, 0.05
    looks = np.arange(200, 20_001, 200)
    chal = np.cumsum(rng.binomial(200, 0.05, (trials, looks.size)), axis=1)
    alarms = 0
    for row in chal:
        logs = [log_evalue(int(x), int(n), 0.05, 1000.0) for x, n in zip(row, looks, strict=True)]
        alarms += max(logs) >= math.log(1 / alpha)
    assert alarms / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_units_are_counted_once() -> None:
    c = RatioCounts()
    c.observe_unit("u1", challenger=False).observe_unit("u1", challenger=False)
    c.observe_unit("u2", challenger=True).observe_unit("u2", challenger=False)
    c.add(1, 2)
    assert (c.units_challenger, c.units_total) == (1, 2)
    assert (c.requests_challenger, c.requests_total) == (1, 2)
    capped = RatioCounts(max_units=1).observe_unit("a", False).observe_unit("b", True)
    assert (capped.units_challenger, capped.units_total) == (0, 1)


events = st.lists(
    st.tuples(st.booleans(), st.sampled_from([None, "a", "b", "c", "d"])), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(events, st.integers(0, 40))
def test_ratio_counts_merge_equals_one_pass(evs: list[tuple[bool, str | None]], cut: int) -> None:
    whole, left, right = RatioCounts(), RatioCounts(), RatioCounts()
    for i, (chal, unit) in enumerate(evs):
        for counts in (whole, left if i < cut else right):
            if unit is None:
                counts.add(int(chal), 1)
            else:
                counts.observe_unit(unit, chal)
    left.merge(right)
    assert left.__getstate__() == whole.__getstate__()


@given(st.text(max_size=40))
def test_unit_hash_is_xxh3_64_of_the_utf8_bytes(unit_id: str) -> None:
    """The contract between workers: XXH3-64, seed 0, of the id's UTF-8 bytes."""
    assert unit_hash(unit_id) == xxhash.xxh3_64_intdigest(unit_id.encode()) < 2**64
    assert unit_hash("u1") == 0x9DC02546854D5DF1  # pinned, as every worker computes it
