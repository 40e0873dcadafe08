"""Mergeable quantile sketch with relative accuracy: a fixed logarithmic histogram.

DDSketch (Masson, Rim & Lee 2019, "DDSketch: a fast and fully-mergeable quantile
sketch with relative-error guarantees", VLDB 12(12)). With ``gamma = (1+a)/(1-a)``,
a positive value x falls in bucket ``i = ceil(log(x) / log(gamma))``, which covers
``(gamma^(i-1), gamma^i]``; the bucket's representative ``2 gamma^i / (gamma + 1)`` is
within relative error ``a`` of every value in it. Values below ``min_value`` (zero
latencies) share one bucket. Buckets are fixed by ``a`` alone, so merging two sketches
adds integer counts: merge equals one pass exactly.

Order statistics are what the quantile confidence sequences need
(:mod:`modelcanary.stats.quantile_cs`): :meth:`LogHistogram.order_statistic` returns
the k-th smallest value's bucket edge, the lower edge for lower bounds and the upper
edge for upper bounds, so the sketch only ever widens an interval.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

_log, _ceil, _INF = math.log, math.ceil, math.inf  # globals: a little faster


class LogHistogram:
    """Counts of non-negative values in logarithmic buckets of relative width ``2a``."""

    def __init__(self, relative_accuracy: float = 0.01, min_value: float = 1e-3) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy {relative_accuracy} must be in (0, 1)")
        if not min_value > 0.0:
            raise ValueError(f"min_value {min_value} must be > 0")
        self.relative_accuracy = relative_accuracy
        self.min_value = min_value
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._bins: dict[int, int] = {}
        self._zero = 0
        self._n = 0
        self._max = 0.0

    def _indices(self, x: np.ndarray) -> np.ndarray:
        return np.ceil(np.log(x) / self._log_gamma).astype(np.int64)

    def update(self, x: float) -> LogHistogram:
        """One value, without numpy: this is the evaluator's per-event hot path."""
        if not 0.0 <= x < _INF:  # NaN fails the comparison too
            raise ValueError("LogHistogram takes finite values >= 0")
        if x < self.min_value:
            self._zero += 1
        else:
            i = _ceil(_log(x) / self._log_gamma)
            bins = self._bins
            bins[i] = bins.get(i, 0) + 1
            if x > self._max:
                self._max = x
        self._n += 1
        return self

    def update_many(self, values: ArrayLike) -> LogHistogram:
        x = np.asarray(values, dtype=float).ravel()
        if x.size == 0:
            return self
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError("LogHistogram takes finite values >= 0")
        small = x < self.min_value
        self._zero += int(small.sum())
        big = x[~small]
        if big.size:
            idx, counts = np.unique(self._indices(big), return_counts=True)
            bins = self._bins
            for i, c in zip(idx.tolist(), counts.tolist(), strict=True):
                bins[i] = bins.get(i, 0) + c
            self._max = max(self._max, float(big.max()))
        self._n += int(x.size)
        return self

    def merge(self, other: LogHistogram) -> LogHistogram:
        if (other.relative_accuracy, other.min_value) != (self.relative_accuracy, self.min_value):
            raise ValueError("cannot merge sketches with different relative_accuracy/min_value")
        for i, c in other._bins.items():
            self._bins[i] = self._bins.get(i, 0) + c
        self._zero += other._zero
        self._n += other._n
        self._max = max(self._max, other._max)
        return self

    def copy(self) -> LogHistogram:
        return LogHistogram(self.relative_accuracy, self.min_value).merge(self)

    @property
    def n(self) -> int:
        return self._n

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.array(sorted(self._bins), dtype=np.int64)
        counts = np.array([self._bins[k] for k in keys.tolist()], dtype=np.int64)
        return keys, self._zero + np.cumsum(counts)

    def _bucket_of_rank(self, k: int) -> int | None:
        """Index of the bucket holding the k-th smallest value (1-based); None = zero bucket."""
        if k <= self._zero:
            return None
        keys, cum = self._cumulative()
        pos = int(np.searchsorted(cum, k, side="left"))
        return int(keys[pos])

    def order_statistic(self, k: int, side: Literal["lower", "upper", "estimate"]) -> float:
        """The k-th smallest value (1-based): its bucket's lower edge, upper edge or
        representative. ``k < 1`` gives 0 and ``k > n`` gives +inf (no information)."""
        if k < 1:
            return 0.0
        if k > self._n:
            return math.inf
        i = self._bucket_of_rank(k)
        if i is None:
            return 0.0 if side == "lower" else (self.min_value if side == "upper" else 0.0)
        if side == "lower":
            return self._gamma ** (i - 1)
        if side == "upper":
            return min(self._gamma**i, self._max) if self._max > 0 else self._gamma**i
        return 2.0 * self._gamma**i / (self._gamma + 1.0)

    def quantile(self, q: float) -> float:
        """Estimate of the q-quantile (order statistic ``floor(q (n-1)) + 1``, numpy's
        ``method="lower"``), within relative error ``a``; NaN when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} must be in [0, 1]")
        if self._n == 0:
            return math.nan
        return self.order_statistic(math.floor(q * (self._n - 1)) + 1, "estimate")

    def get(self) -> dict[str, float]:
        return {f"p{round(q * 100)}": self.quantile(q) for q in (0.5, 0.95, 0.99)}

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"LogHistogram(n={self._n}, buckets={len(self._bins)})"
