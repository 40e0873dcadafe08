"""Sequential sample-ratio-mismatch (SRM) test: is the challenger getting its share?

Lindon & Malek (2022), "Anytime-valid inference for multinomial count data", NeurIPS:
a Dirichlet-multinomial mixture of likelihood ratios against the configured
allocation is a test martingale. With two arms it is a beta-binomial mixture: after x
of n units went to the challenger when the configured fraction is f,

    E_n = Beta(k f + x, k (1-f) + n - x) / Beta(k f, k (1-f)) / (f^x (1-f)^(n-x)),

with prior strength k (the prior is centred on f with standard deviation about
sqrt(f (1-f) / k)). Under correct routing ``P(exists n: E_n >= 1/alpha) <= alpha``
(Ville). Independent strata (one per step and traffic fraction; units with and without
a unit id) multiply: the product of test martingales over disjoint independent data is
a test martingale, so one threshold covers the whole rollout.

:class:`RatioCounts` is the mergeable state of one stratum: anonymous requests are
counted; requests carrying a unit id are counted once per unit (a unit's requests all
go to the same arm, so counting requests would overstate the evidence). Units are kept
as 64-bit hashes, at most ``max_units`` per stratum; after that new units are ignored
(the test stays valid, it just stops learning). What counts as a request of which
arm depends on how the router emits events; the judge's evidence decides that
(:meth:`modelcanary.judge.evidence.RolloutEvidence.observe_prediction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.special import betaln

from modelcanary.stats.stable_hash import stable_hash, stable_hash_bytes


def log_evalue(challenger: int, total: int, fraction: float, strength: float) -> float:
    """log E_n of the beta-binomial mixture (0 when there is no data)."""
    if total <= 0 or not 0.0 < fraction < 1.0:
        return 0.0
    a, b = strength * fraction, strength * (1.0 - fraction)
    x, y = challenger, total - challenger
    return float(
        betaln(a + x, b + y) - betaln(a, b) - x * math.log(fraction) - y * math.log1p(-fraction)
    )


#: Stable 64-bit hash of a unit id (Python's ``hash`` is salted per process, so it cannot
#: merge). A contract: every worker must give a unit the same hash.
unit_hash = stable_hash


class RatioCounts:
    """Challenger share of one stratum: anonymous request counts plus distinct units."""

    def __init__(self, max_units: int = 200_000) -> None:
        self.max_units = max_units
        self.requests_challenger = 0
        self.requests_total = 0
        self._units: dict[int, bool] = {}

    def add(self, challenger: int, total: int) -> RatioCounts:
        """Anonymous requests: ``challenger`` of ``total`` went to the challenger."""
        self.requests_challenger += challenger
        self.requests_total += total
        return self

    def observe_unit(self, unit_id: str, challenger: bool) -> RatioCounts:
        """A request of a unit; the unit counts once, as the challenger's if any of its
        requests went to the challenger."""
        h = stable_hash_bytes(unit_id.encode())  # unit_hash, without a Python call
        seen = self._units.get(h)
        if seen is None:
            if len(self._units) >= self.max_units:
                return self
            self._units[h] = challenger
        elif challenger and not seen:
            self._units[h] = True
        return self

    def merge(self, other: RatioCounts) -> RatioCounts:
        self.requests_challenger += other.requests_challenger
        self.requests_total += other.requests_total
        for h, flag in other._units.items():
            self._units[h] = self._units.get(h, False) or flag
        return self

    @property
    def units_total(self) -> int:
        return len(self._units)

    @property
    def units_challenger(self) -> int:
        return sum(self._units.values())

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class SrmStratum:
    key: str
    fraction: float
    challenger: int
    total: int
    log_evalue: float

    @property
    def observed_fraction(self) -> float | None:
        return self.challenger / self.total if self.total else None


@dataclass(frozen=True)
class SrmResult:
    """Outcome of the sequential SRM test over all strata."""

    alpha: float
    log_evalue: float
    detected: bool
    strata: tuple[SrmStratum, ...]

    @property
    def worst(self) -> SrmStratum | None:
        return max(self.strata, key=lambda s: s.log_evalue, default=None)


def srm_test(
    strata: dict[str, tuple[float, RatioCounts]], alpha: float, strength: float
) -> SrmResult:
    """Combine strata ``key -> (configured fraction, counts)`` into one decision."""
    rows: list[SrmStratum] = []
    for key, (fraction, counts) in sorted(strata.items()):
        for kind, x, n in (
            ("requests", counts.requests_challenger, counts.requests_total),
            ("units", counts.units_challenger, counts.units_total),
        ):
            if n == 0:
                continue
            x = min(x, n)  # a challenger event whose served twin has not arrived yet
            rows.append(
                SrmStratum(f"{key}/{kind}", fraction, x, n, log_evalue(x, n, fraction, strength))
            )
    total = sum(r.log_evalue for r in rows)
    detected = alpha > 0 and total >= math.log(1.0 / alpha)
    return SrmResult(alpha, total, detected, tuple(rows))
