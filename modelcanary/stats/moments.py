"""Mergeable count, mean and variance of a stream; and of a stream of pairs.

Welford's update and the pairwise merge of Chan, Golub & LeVeque (1979, "Updating
formulae and a pairwise algorithm for computing sample variances"): for parts A and B
with counts n_A, n_B, means m_A, m_B and centred sums of squares M_A, M_B,

    n = n_A + n_B,   d = m_B - m_A,   m = m_A + d n_B / n,
    M = M_A + M_B + d^2 n_A n_B / n,

and for pairs (x, y) the co-moment C = C_A + C_B + d_x d_y n_A n_B / n. Merging two
partial states is one pass over the union, up to floating-point rounding.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


class Moments:
    """Count, mean and centred sum of squares of a stream of numbers."""

    __slots__ = ("_m2", "_mean", "_n")

    def __init__(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    @classmethod
    def from_array(cls, values: ArrayLike) -> Moments:
        x = np.asarray(values, dtype=float).ravel()
        out = cls()
        if x.size:
            out._n = int(x.size)
            out._mean = float(x.mean())
            out._m2 = float(((x - out._mean) ** 2).sum())
        return out

    def update(self, x: float) -> Moments:
        # Welford's step with the state in locals (the evaluator calls this several times
        # per event): the same operations in the same order as the textbook form.
        n = self._n + 1
        mean = self._mean
        delta = x - mean
        mean += delta / n
        self._m2 += delta * (x - mean)
        self._n, self._mean = n, mean
        return self

    def update_many(self, values: ArrayLike) -> Moments:
        return self.merge(Moments.from_array(values))

    def merge(self, other: Moments) -> Moments:
        """Fold ``other`` into this accumulator (in place) and return self."""
        if other._n == 0:
            return self
        if self._n == 0:
            self._n, self._mean, self._m2 = other._n, other._mean, other._m2
            return self
        n = self._n + other._n
        delta = other._mean - self._mean
        self._mean += delta * other._n / n
        self._m2 += other._m2 + delta * delta * self._n * other._n / n
        self._n = n
        return self

    def copy(self) -> Moments:
        return Moments().merge(self)

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        return self._mean if self._n else math.nan

    @property
    def total(self) -> float:
        return self._mean * self._n

    @property
    def variance(self) -> float:
        """Unbiased sample variance (ddof=1); 0 for fewer than two values."""
        return self._m2 / (self._n - 1) if self._n > 1 else 0.0

    @property
    def population_variance(self) -> float:
        return self._m2 / self._n if self._n else 0.0

    def get(self) -> float:
        return self.mean

    def __getstate__(self) -> dict[str, Any]:
        return {"n": self._n, "mean": self._mean, "m2": self._m2}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._n, self._mean, self._m2 = state["n"], state["mean"], state["m2"]

    def __repr__(self) -> str:
        return f"Moments(n={self._n}, mean={self.mean:.6g}, variance={self.variance:.6g})"


class CoMoments:
    """Moments of a stream of pairs (x, y), with their co-moment: the sufficient
    statistics of a paired comparison (shadow mode: both arms answered one request)."""

    __slots__ = ("_cxy", "_m2x", "_m2y", "_mx", "_my", "_n")

    def __init__(self) -> None:
        self._n = 0
        self._mx = self._my = 0.0
        self._m2x = self._m2y = self._cxy = 0.0

    @classmethod
    def from_arrays(cls, xs: ArrayLike, ys: ArrayLike) -> CoMoments:
        x = np.asarray(xs, dtype=float).ravel()
        y = np.asarray(ys, dtype=float).ravel()
        if x.shape != y.shape:
            raise ValueError(f"paired arrays differ in length: {x.size} and {y.size}")
        out = cls()
        if x.size:
            out._n = int(x.size)
            out._mx, out._my = float(x.mean()), float(y.mean())
            dx, dy = x - out._mx, y - out._my
            out._m2x = float((dx * dx).sum())
            out._m2y = float((dy * dy).sum())
            out._cxy = float((dx * dy).sum())
        return out

    def update(self, x: float, y: float) -> CoMoments:
        self._n += 1
        dx = x - self._mx
        self._mx += dx / self._n
        dy = y - self._my
        self._my += dy / self._n
        self._m2x += dx * (x - self._mx)
        self._m2y += dy * (y - self._my)
        self._cxy += dx * (y - self._my)
        return self

    def update_many(self, xs: ArrayLike, ys: ArrayLike) -> CoMoments:
        return self.merge(CoMoments.from_arrays(xs, ys))

    def merge(self, other: CoMoments) -> CoMoments:
        if other._n == 0:
            return self
        if self._n == 0:
            for name in self.__slots__:
                setattr(self, name, getattr(other, name))
            return self
        n = self._n + other._n
        dx = other._mx - self._mx
        dy = other._my - self._my
        w = self._n * other._n / n
        self._mx += dx * other._n / n
        self._my += dy * other._n / n
        self._m2x += other._m2x + dx * dx * w
        self._m2y += other._m2y + dy * dy * w
        self._cxy += other._cxy + dx * dy * w
        self._n = n
        return self

    def copy(self) -> CoMoments:
        return CoMoments().merge(self)

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean_x(self) -> float:
        return self._mx if self._n else math.nan

    @property
    def mean_y(self) -> float:
        return self._my if self._n else math.nan

    @property
    def variance_x(self) -> float:
        return self._m2x / (self._n - 1) if self._n > 1 else 0.0

    @property
    def variance_y(self) -> float:
        return self._m2y / (self._n - 1) if self._n > 1 else 0.0

    @property
    def covariance(self) -> float:
        return self._cxy / (self._n - 1) if self._n > 1 else 0.0

    def combination_variance(self, a: float, b: float) -> float:
        """Sample variance of ``a*x - b*y`` (never negative)."""
        if self._n < 2:
            return 0.0
        m2 = a * a * self._m2x + b * b * self._m2y - 2.0 * a * b * self._cxy
        return max(m2, 0.0) / (self._n - 1)

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"CoMoments(n={self._n}, mean_x={self.mean_x:.6g}, mean_y={self.mean_y:.6g})"
