"""Time-bucketed call counts for sliding windows: calls, errors and latencies per bucket.

The SLO burn-rate gate asks "how many of the challenger's calls in the last 300 s
failed, or took longer than 250 ms?". :class:`WindowedCounts` answers for any window
that ends at a bucket boundary, with bounded memory and exact merging:

- a call at time t (epoch seconds) falls in bucket ``floor(t / bucket_s)``; a bucket
  holds the number of calls, of failed calls, and a logarithmic latency histogram
  (DDSketch indexing: Masson, Rim & Lee 2019, VLDB 12(12); a latency x > 0 goes to
  ``i = ceil(log(x) / log(gamma))``, ``gamma = (1+a)/(1-a)``, covering
  ``(gamma^(i-1), gamma^i]``), so any latency threshold can be asked later;
- buckets older than ``retention_s`` before the newest bucket seen are dropped, and
  calls that old are ignored: the state is at most ``retention_s / bucket_s + 1``
  buckets, whatever the traffic;
- merging adds bucket counts and then drops what the merged newest bucket makes too
  old. The result is the same as one pass over the union in any order: exactly the
  calls whose bucket is within ``retention_s`` of the newest bucket of all.

A call counts as slower than a threshold T only when its whole histogram bucket lies
above T, so the slow count never exceeds the truth; calls within a relative ``2a`` of
T may count as fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_INF = math.inf
_log, _ceil = math.log, math.ceil  # globals: a little faster than math.log


@dataclass(frozen=True)
class WindowTotals:
    """Counts of one window: ``calls``, of which ``errors`` failed."""

    calls: int
    errors: int
    first_bucket: int
    last_bucket: int


class WindowedCounts:
    """Calls, errors and latency histograms of one stream, per ``bucket_s`` seconds."""

    def __init__(
        self,
        bucket_s: int = 5,
        retention_s: int = 3900,
        relative_accuracy: float = 0.02,
        min_value: float = 1e-3,
    ) -> None:
        if not (isinstance(bucket_s, int) and bucket_s >= 1):
            raise ValueError(f"bucket_s {bucket_s!r} must be a whole number of seconds >= 1")
        if retention_s < bucket_s:
            raise ValueError(f"retention_s {retention_s} must be >= bucket_s {bucket_s}")
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy {relative_accuracy} must be in (0, 1)")
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.relative_accuracy = relative_accuracy
        self.min_value = min_value
        self._keep = retention_s // bucket_s  # buckets older than newest - keep are dropped
        self._inv_log_gamma = 1.0 / math.log((1.0 + relative_accuracy) / (1.0 - relative_accuracy))
        # bucket -> [calls, errors, {latency bin: count}]
        self._buckets: dict[int, list[Any]] = {}
        self._newest: int | None = None
        self._first: int | None = None

    # -------------------------------------------------------------------------- update

    def update(self, t_s: float, error: bool, latency_ms: float) -> WindowedCounts:
        """One call at epoch second ``t_s``: the evaluator's per-event hot path (a bucket
        that exists is within the retention, so only a new bucket needs the checks)."""
        b = t_s // self.bucket_s
        if type(b) is not int:  # a float time; the evaluator passes whole seconds
            b = int(b)
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._open(b)
            if bucket is None:
                return self
        bucket[0] += 1
        if error:
            bucket[1] += 1
        if self.min_value <= latency_ms < _INF:
            i = _ceil(_log(latency_ms) * self._inv_log_gamma)
            bins = bucket[2]
            bins[i] = bins.get(i, 0) + 1
        return self

    def _open(self, b: int) -> list[Any] | None:
        """A new bucket for ``b``, or None if ``b`` is older than the retention."""
        if self._first is None or b < self._first:
            self._first = b
        if self._newest is None or b > self._newest:
            self._advance(b)
        elif b < self._newest - self._keep:
            return None
        bucket: list[Any] = [0, 0, {}]
        self._buckets[b] = bucket
        return bucket

    def _advance(self, newest: int) -> None:
        self._newest = newest
        oldest = newest - self._keep
        stale = [b for b in self._buckets if b < oldest]
        for b in stale:
            del self._buckets[b]

    # --------------------------------------------------------------------------- merge

    def merge(self, other: WindowedCounts) -> WindowedCounts:
        if (other.bucket_s, other.relative_accuracy, other.min_value) != (
            self.bucket_s,
            self.relative_accuracy,
            self.min_value,
        ):
            raise ValueError("cannot merge windowed counts with different buckets or accuracy")
        for b, (calls, errors, bins) in other._buckets.items():
            mine = self._buckets.get(b)
            if mine is None:
                self._buckets[b] = [calls, errors, dict(bins)]
                continue
            mine[0] += calls
            mine[1] += errors
            into = mine[2]
            for i, c in bins.items():
                into[i] = into.get(i, 0) + c
        if other._first is not None and (self._first is None or other._first < self._first):
            self._first = other._first
        if other._newest is not None and (self._newest is None or other._newest > self._newest):
            self._newest = other._newest
        if self._newest is not None:
            self._advance(self._newest)
        return self

    def copy(self) -> WindowedCounts:
        return WindowedCounts(
            self.bucket_s, self.retention_s, self.relative_accuracy, self.min_value
        ).merge(self)

    # ------------------------------------------------------------------------- reading

    @property
    def newest_bucket(self) -> int | None:
        """The bucket of the latest call seen (None before any)."""
        return self._newest

    @property
    def first_bucket(self) -> int | None:
        """The bucket of the earliest call ever seen, even if since dropped."""
        return self._first

    def bucket_of(self, t_s: float) -> int:
        return int(t_s // self.bucket_s)

    def _in_window(self, end_bucket: int, length_s: int) -> tuple[int, list[list[Any]]]:
        first = end_bucket - length_s // self.bucket_s + 1
        get = self._buckets.get
        found = (get(b) for b in range(first, end_bucket + 1))
        return first, [bucket for bucket in found if bucket is not None]

    def window(self, end_bucket: int, length_s: int) -> WindowTotals:
        """Calls in the ``length_s / bucket_s`` buckets ending with ``end_bucket``."""
        first, buckets = self._in_window(end_bucket, length_s)
        calls = sum(bucket[0] for bucket in buckets)
        errors = sum(bucket[1] for bucket in buckets)
        return WindowTotals(calls, errors, first, end_bucket)

    def slower_than(self, threshold_ms: float, end_bucket: int, length_s: int) -> int:
        """Calls in the window certainly slower than ``threshold_ms`` (whole histogram
        bucket above it)."""
        if not threshold_ms > 0:
            raise ValueError(f"threshold_ms {threshold_ms} must be > 0")
        edge = math.ceil(math.log(threshold_ms) * self._inv_log_gamma)  # bin holding T
        _, buckets = self._in_window(end_bucket, length_s)
        return sum(c for bucket in buckets for i, c in bucket[2].items() if i > edge)

    @property
    def n(self) -> int:
        """Calls held (within the retention)."""
        return sum(bucket[0] for bucket in self._buckets.values())

    def __len__(self) -> int:
        return len(self._buckets)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, WindowedCounts)
            and (self.bucket_s, self._keep, self._newest, self._first)
            == (other.bucket_s, other._keep, other._newest, other._first)
            and self._buckets == other._buckets
        )

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"WindowedCounts(bucket_s={self.bucket_s}, buckets={len(self._buckets)}, "
            f"newest={self._newest})"
        )
