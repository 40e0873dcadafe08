"""Statistics: small mergeable accumulators and anytime-valid tests. Pure: no I/O.

Accumulators follow one vocabulary: ``update(x) -> self``, ``update_many(array)``,
``merge(other) -> self`` (in place; merge equals one pass over the union), ``copy()``.
"""

from __future__ import annotations

from modelcanary.stats.bernoulli import Bernoulli
from modelcanary.stats.confidence_sequences import MixtureDesign, boundary, contrast_bounds
from modelcanary.stats.moments import CoMoments, Moments
from modelcanary.stats.quantiles import LogHistogram
from modelcanary.stats.reservoir import Reservoir
from modelcanary.stats.srm import RatioCounts, srm_test

__all__ = [
    "Bernoulli",
    "CoMoments",
    "LogHistogram",
    "MixtureDesign",
    "Moments",
    "RatioCounts",
    "Reservoir",
    "boundary",
    "contrast_bounds",
    "srm_test",
]
