"""Time-bucketed call counts: window sums against brute force, merge equals one pass in
any order, bounded memory, pickling, conservative slow counts."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.stats.windowed import WindowedCounts

T0 = 1_800_000_000.0

calls = st.lists(
    st.tuples(
        st.floats(0, 2_000, allow_nan=False),  # seconds after T0
        st.booleans(),
        st.floats(0, 5_000, allow_nan=False),  # latency ms
    ),
    max_size=150,
)


def _fed(events: list[tuple[float, bool, float]], **kwargs: int) -> WindowedCounts:
    acc = WindowedCounts(**kwargs)
    for t, error, latency in events:
        acc.update(T0 + t, error, latency)
    return acc


@settings(max_examples=60, deadline=None)
@given(calls, st.integers(1, 4), st.randoms(use_true_random=False))
def test_merging_partitions_equals_one_pass_in_any_order(
    events: list[tuple[float, bool, float]], parts: int, rnd: object
) -> None:
    one_pass = _fed(events, retention_s=600)
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert _fed(shuffled, retention_s=600) == one_pass
    merged = WindowedCounts(retention_s=600)
    for k in range(parts):
        merged.merge(_fed(shuffled[k::parts], retention_s=600))
    assert merged == one_pass


def test_window_sums_match_brute_force_and_slow_counts_are_conservative() -> None:
    rng = np.random.default_rng(4)
    t = T0 + np.sort(rng.uniform(0, 900, 5_000))
    errors = rng.random(t.size) < 0.03
    latency = rng.lognormal(4.0, 0.7, t.size)
    acc = WindowedCounts(bucket_s=5, retention_s=3600, relative_accuracy=0.02)
    for x, e, lat in zip(t, errors, latency, strict=True):
        acc.update(float(x), bool(e), float(lat))
    gamma = 1.02 / 0.98
    end = acc.bucket_of(T0 + 600)
    for length in (5, 30, 300):
        inside = (np.floor(t / 5) > end - length // 5) & (np.floor(t / 5) <= end)
        totals = acc.window(end, length)
        assert (totals.calls, totals.errors) == (int(inside.sum()), int(errors[inside].sum()))
        for threshold in (20.0, 55.0, 250.0):
            slow = acc.slower_than(threshold, end, length)
            assert int((latency[inside] > threshold * gamma).sum()) <= slow
            assert slow <= int((latency[inside] > threshold).sum())


def test_memory_is_bounded_by_the_retention_and_old_calls_are_ignored() -> None:
    acc = WindowedCounts(bucket_s=5, retention_s=300)
    for i in range(5_000):
        acc.update(T0 + i, False, 10.0)
    assert len(acc) <= 300 // 5 + 1
    held = acc.n
    acc.update(T0, True, 10.0)  # far older than the retention: ignored
    assert acc.n == held
    assert acc.first_bucket == acc.bucket_of(T0)
    assert acc.newest_bucket == acc.bucket_of(T0 + 4_999)


def test_pickle_round_trip_and_copy() -> None:
    acc = _fed([(1.0, True, 12.0), (7.5, False, 300.0), (7.9, False, 0.0)])
    again = pickle.loads(pickle.dumps(acc))
    assert again == acc and again.copy() == acc
    again.update(T0 + 8, True, 1.0)
    assert again != acc  # the copy does not share buckets
    assert acc.window(acc.bucket_of(T0 + 8), 10).calls == 3


def test_bad_latencies_are_counted_as_calls_but_not_in_the_histogram() -> None:
    acc = WindowedCounts()
    for latency in (-1.0, math.nan, math.inf, 0.0):
        acc.update(T0, False, latency)
    end = acc.bucket_of(T0)
    assert acc.window(end, 5).calls == 4
    assert acc.slower_than(0.01, end, 5) == 0


def test_cannot_merge_different_buckets() -> None:
    with pytest.raises(ValueError, match="different buckets"):
        WindowedCounts(bucket_s=5).merge(WindowedCounts(bucket_s=10))
    with pytest.raises(ValueError, match="whole number"):
        WindowedCounts(bucket_s=2.5)  # type: ignore[arg-type]
