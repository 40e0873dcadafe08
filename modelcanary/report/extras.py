"""Report-only evidence: latency distributions, shadow agreement, Evidently's drift HTML.

The judge's evidence holds what it decides on. A data scientist also wants to see the
latency distribution of both arms, how often the arms agree in shadow mode, and
Evidently's own drift report; these are read here from the same
:class:`~modelcanary.judge.RolloutEvidence`, pure and cheap (no I/O), and merged into a
decision's evidence by whoever builds the decision (:func:`report_evidence`).

Agreement in shadow mode is computed from the paired accuracy values the judge keeps
(``x`` challenger correct, ``y`` champion correct, on every labelled mirrored request):

    P(both right or both wrong) = 1 - E[x] - E[y] + 2 E[xy],   E[xy] = cov(x, y) + E[x] E[y]

with the population covariance. For binary labels this is exactly the share of
requests where the two predictions are equal; for more classes it is an upper bound.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from modelcanary.events import Arm, Mode
from modelcanary.judge.drift_gate import INPUT, PREDICTION, applies
from modelcanary.judge.evidence import RolloutEvidence
from modelcanary.policy import DriftSettings
from modelcanary.stats.moments import CoMoments

CURVE_QUANTILES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SUMMARY_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _lower_quantile(ordered: list[float], q: float) -> float:
    """numpy's ``method="lower"`` quantile of sorted values."""
    return ordered[math.floor(q * (len(ordered) - 1))]


def latency_summary(evidence: RolloutEvidence, mode: Mode) -> dict[str, Any]:
    """Per arm: calls, mean, p50/p90/p95/p99 and the quantile curve, in ms."""
    out: dict[str, Any] = {"mode": mode.value}
    for arm in Arm:
        sketch = evidence.latency_sketch(mode, arm)
        if sketch.n == 0:
            continue
        means = [pair[0 if arm is Arm.CHALLENGER else 1] for pair in
                 evidence.arm_strata("latency_mean", mode).values()]  # fmt: skip
        total = sum(m.n for m in means)
        stats: dict[str, Any] = {"n": sketch.n}
        if total:
            stats["mean"] = sum(m.mean * m.n for m in means) / total
        for name, q in SUMMARY_QUANTILES.items():
            stats[name] = _finite(sketch.quantile(q))
        stats["curve"] = [[q, _finite(sketch.quantile(q))] for q in CURVE_QUANTILES]
        out[arm.value] = stats
    return out


def shadow_summary(evidence: RolloutEvidence) -> dict[str, Any]:
    """Agreement of the arms on labelled mirrored requests, and their score distributions
    on the sampled mirrored answers (score if the model gives one, else prediction)."""
    pooled = CoMoments()
    for cm in evidence.paired_strata("accuracy").values():
        pooled.merge(cm)
    out: dict[str, Any] = {"agreement": None, "agreement_n": pooled.n}
    if pooled.n:
        n = pooled.n
        exy = pooled.covariance * (n - 1) / n + pooled.mean_x * pooled.mean_y
        agree = 1.0 - pooled.mean_x - pooled.mean_y + 2.0 * exy
        out["agreement"] = min(max(agree, 0.0), 1.0)
        out["agreement_basis"] = "both right or both wrong; equal predictions for binary labels"
    score: dict[str, Any] = {}
    for arm in Arm:
        values = sorted(
            float(item["output"])
            for item in evidence.outputs(Mode.SHADOW, arm).items()
            if isinstance(item.get("output"), int | float) and not isinstance(item["output"], bool)
        )
        if values:
            score[arm.value] = {
                "n": len(values),
                "mean": sum(values) / len(values),
                **{f"p{round(q * 100)}": _lower_quantile(values, q) for q in (0.1, 0.5, 0.9)},
            }
    if "champion" in score and "challenger" in score:
        score["mean_shift"] = score["challenger"]["mean"] - score["champion"]["mean"]
    out["score"] = score
    return out


def report_evidence(evidence: RolloutEvidence, mode: Mode) -> dict[str, Any]:
    """Extra evidence keys for the report: ``latency`` always, ``shadow`` in shadow mode.
    Merge into a decision's evidence: ``{**judgement.evidence, **report_evidence(...)}``."""
    out: dict[str, Any] = {"latency": latency_summary(evidence, mode)}
    if mode is Mode.SHADOW:
        out["shadow"] = shadow_summary(evidence)
    return out


def evidently_html(evidence: RolloutEvidence, mode: Mode, settings: DriftSettings) -> str | None:
    """Evidently's own drift report as standalone HTML (the ``drift.html`` artifact): the
    inputs of both cohorts (canary only) and the arms' outputs, or None while an arm has
    fewer than ``settings.min_rows`` rows.

    Same samples and pinned methods as the judge's drift evidence. Inputs and outputs
    are separate samples, so they go into one table as separate rows, each leaving the
    other's columns empty; Evidently scores each column on its non-empty values, which
    gives the same scores as two reports at half the size (the HTML is ~4 MB,
    self-contained). Costs ~0.5 s, plus Evidently's import (~3 s) the first time.
    """
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    frames: dict[Arm, list[dict[str, Any]]] = {Arm.CHAMPION: [], Arm.CHALLENGER: []}
    for kind in (INPUT, PREDICTION):
        if not applies(kind, mode):
            continue
        get = evidence.inputs if kind == INPUT else evidence.outputs
        rows = {arm: get(mode, arm).items()[: settings.sample_size] for arm in frames}
        if min(len(r) for r in rows.values()) >= settings.min_rows:
            for arm, items in rows.items():
                frames[arm].extend(items)
    if not frames[Arm.CHAMPION] or not frames[Arm.CHALLENGER]:
        return None
    reference, current = pd.DataFrame(frames[Arm.CHAMPION]), pd.DataFrame(frames[Arm.CHALLENGER])
    columns = [c for c in reference.columns if c in current.columns]
    numerical = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])]
    categorical = [c for c in columns if c not in numerical]
    for frame in (reference, current):
        for c in categorical:
            frame[c] = frame[c].map(lambda v: None if v is None or v != v else str(v))
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=columns,
        num_method=settings.num_method,
        cat_method=settings.cat_method,
        threshold=settings.threshold,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns: 0/0 in scores
        snapshot = Report([preset], include_tests=True).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )
    return str(snapshot.get_html_str(as_iframe=False))
