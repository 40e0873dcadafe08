"""LogHistogram: relative accuracy against numpy, exact merge, conservative edges."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.stats.quantiles import LogHistogram

latencies = st.lists(st.floats(min_value=0.0, max_value=1e5, allow_nan=False), max_size=80)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_quantiles_within_relative_accuracy_of_numpy(q: float) -> None:
    x = np.random.default_rng(5).lognormal(np.log(20), 0.8, 20_000)
    sketch = LogHistogram(relative_accuracy=0.01).update_many(x)
    exact = np.quantile(x, q, method="lower")
    assert sketch.quantile(q) == pytest.approx(exact, rel=0.01)


def test_order_statistic_edges_bracket_the_true_value() -> None:
    x = np.sort(np.random.default_rng(6).exponential(5.0, 3000))
    sketch = LogHistogram(0.02).update_many(x)
    for k in (1, 10, 1500, 2999, 3000):
        assert sketch.order_statistic(k, "lower") <= x[k - 1] <= sketch.order_statistic(k, "upper")
    assert sketch.order_statistic(0, "upper") == 0.0
    assert math.isinf(sketch.order_statistic(3001, "lower"))


@settings(max_examples=150, deadline=None)
@given(latencies, latencies)
def test_merge_equals_one_pass_exactly(xs: list[float], ys: list[float]) -> None:
    whole = LogHistogram().update_many(xs + ys)
    merged = LogHistogram().update_many(xs).merge(LogHistogram().update_many(ys))
    assert merged.__getstate__() == whole.__getstate__()


@settings(max_examples=50, deadline=None)
@given(latencies)
def test_update_equals_update_many(xs: list[float]) -> None:
    one = LogHistogram()
    for v in xs:
        assert one.update(v) is one
    assert one.__getstate__() == LogHistogram().update_many(xs).__getstate__()


def test_zero_latencies_and_bad_input() -> None:
    sketch = LogHistogram().update_many([0.0, 0.0, 5.0])
    assert sketch.quantile(0.5) == 0.0
    with pytest.raises(ValueError):
        sketch.update(-1.0)
    with pytest.raises(ValueError):
        sketch.merge(LogHistogram(relative_accuracy=0.05))
    assert pickle.loads(pickle.dumps(sketch)).__getstate__() == sketch.__getstate__()
