"""Mergeable success counter: the exact sufficient statistic of a 0/1 stream.

Counts are integers, so merging two partial states equals one pass over the union
exactly. Exposes the same ``n`` / ``mean`` / ``variance`` vocabulary as
:class:`~modelcanary.stats.moments.Moments`, so a gate can compare either.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


class Bernoulli:
    """Number of trials and of successes."""

    __slots__ = ("_n", "_successes")

    def __init__(self, n: int = 0, successes: int = 0) -> None:
        if not 0 <= successes <= n:
            raise ValueError(f"successes {successes} must be in [0, n={n}]")
        self._n = n
        self._successes = successes

    def update(self, success: bool) -> Bernoulli:
        self._n += 1
        self._successes += bool(success)
        return self

    def update_many(self, values: ArrayLike) -> Bernoulli:
        x = np.asarray(values, dtype=bool).ravel()
        self._n += int(x.size)
        self._successes += int(x.sum())
        return self

    def merge(self, other: Bernoulli) -> Bernoulli:
        self._n += other._n
        self._successes += other._successes
        return self

    def copy(self) -> Bernoulli:
        return Bernoulli(self._n, self._successes)

    @property
    def n(self) -> int:
        return self._n

    @property
    def successes(self) -> int:
        return self._successes

    @property
    def mean(self) -> float:
        return self._successes / self._n if self._n else math.nan

    @property
    def variance(self) -> float:
        """Unbiased sample variance of the 0/1 values, p(1-p) n/(n-1)."""
        if self._n < 2:
            return 0.0
        p = self._successes / self._n
        return p * (1.0 - p) * self._n / (self._n - 1)

    def get(self) -> float:
        return self.mean

    def __getstate__(self) -> dict[str, Any]:
        return {"n": self._n, "successes": self._successes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._n, self._successes = state["n"], state["successes"]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bernoulli) and (self._n, self._successes) == (
            other._n,
            other._successes,
        )

    def __hash__(self) -> int:
        return hash((self._n, self._successes))

    def __repr__(self) -> str:
        return f"Bernoulli(n={self._n}, successes={self._successes})"
