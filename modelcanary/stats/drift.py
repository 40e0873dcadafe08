"""Distribution drift between two samples, per column, computed by Evidently 0.7.

The judge compares the challenger's cohort with the champion's: the inputs (in canary
mode the arms serve different requests, so drift there means the cohorts differ — a
routing or cohort bug) and the outputs (does the challenger predict differently). It
runs Evidently's ``DataDriftPreset`` with pinned methods, so the method does not
change with the sample size: by default normed Wasserstein distance for numbers and
Jensen-Shannon distance for categories, drifted when the distance is >= 0.1 (for
p-value methods such as ``ks`` or ``chisquare``, drifted when the p-value is < the
threshold). Evidently decides; this module only shapes its inputs and reads its tests.

Evidently costs ~3 s to import, so it is imported on first use; call :func:`warm_up`
at process start to pay that before the first judgement needs it.

These are fixed-sample tests: repeated looks inflate their false alarms, so drift
gates are heuristics outside the judge's alpha budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REFERENCE = "champion"
CURRENT = "challenger"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float | None
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    """Per-column drift of ``current`` (challenger) against ``reference`` (champion)."""

    columns: tuple[ColumnDrift, ...]
    rows_reference: int
    rows_current: int

    @property
    def drifted_share(self) -> float:
        return sum(c.drifted for c in self.columns) / len(self.columns) if self.columns else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": {REFERENCE: self.rows_reference, CURRENT: self.rows_current},
            "drifted_share": self.drifted_share,
            "columns": {
                c.column: {
                    "method": c.method,
                    "score": c.score,
                    "threshold": c.threshold,
                    "drifted": c.drifted,
                }
                for c in self.columns
            },
        }


def warm_up() -> None:
    """Import Evidently now (about 3 s) instead of inside the first judgement."""
    import evidently.presets  # noqa: F401


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _columns(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    names = sorted({k for row in rows for k in row})
    numerical, categorical = [], []
    for name in names:
        values = [row.get(name) for row in rows if row.get(name) is not None]
        if not values:
            continue
        if all(_is_number(v) for v in values):
            numerical.append(name)
        else:
            categorical.append(name)
    return numerical, categorical


def compute_drift(
    reference: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    num_method: str = "wasserstein",
    cat_method: str = "jensenshannon",
    threshold: float = 0.1,
) -> DriftReport:
    """Run Evidently on two lists of flat records (column name -> value)."""
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical, categorical = _columns([*reference, *current])
    columns = numerical + categorical
    if not columns or not reference or not current:
        return DriftReport((), len(reference), len(current))

    def frame(rows: Sequence[Mapping[str, Any]]) -> Any:
        df = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
        for c in numerical:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        for c in categorical:
            df[c] = df[c].map(lambda v: None if v is None else str(v)).astype(object)
        return df

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    ref = Dataset.from_pandas(frame(reference), data_definition=definition)
    cur = Dataset.from_pandas(frame(current), data_definition=definition)
    preset = DataDriftPreset(
        columns=columns, num_method=num_method, cat_method=cat_method, threshold=threshold
    )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns: 0/0 in scores
        snapshot = Report([preset], include_tests=True).run(cur, ref)
    return DriftReport(_read(snapshot.dict(), threshold), len(reference), len(current))


def _read(snapshot: Mapping[str, Any], threshold: float) -> tuple[ColumnDrift, ...]:
    failed: dict[str, bool] = {}
    for test in snapshot.get("tests", []):
        metric_id = (test.get("metric_config") or {}).get("metric_id")
        if metric_id is not None and test.get("id") == "drift":
            failed[metric_id] = test.get("status") == "FAIL"
    out: list[ColumnDrift] = []
    for metric in snapshot.get("metrics", []):
        config = metric.get("config") or {}
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        value = metric.get("value")
        score = float(value) if _is_number(value) else None
        out.append(
            ColumnDrift(
                column=str(config.get("column")),
                method=str(config.get("method")),
                score=score,
                threshold=float(config.get("threshold") or threshold),
                drifted=failed.get(metric.get("id"), False),
            )
        )
    return tuple(out)
