"""Evaluation reports a data scientist can read in two minutes: one self-contained HTML file.

From a rollout's recorded decisions (the audit trail in MLflow) the report answers what
was decided, why, on how much evidence and what drifted: each gate's estimate with its
anytime-valid interval over time, latency and errors of both arms, KPIs, drift per
column (and Evidently's report when a run carries it), the sample-ratio check, shadow
agreement, the policy in force and the timeline of steps and decisions.

- :mod:`.timeline` reads decision dicts (pure); :mod:`.frames` turns them into DataFrames
  and :mod:`.plots` into matplotlib figures (for notebooks);
- :mod:`.svg`, :mod:`.charts`, :mod:`.sections`, :mod:`.html` render (pure);
- :mod:`.mlflow_source` loads a rollout from MLflow; :mod:`.attach` writes the file and
  logs it as ``report.html`` of the rollout's decision run;
- :mod:`.extras` computes report-only evidence (latency distributions, shadow agreement,
  Evidently HTML) from the judge's :class:`~modelcanary.judge.RolloutEvidence`.

Example::

    from pathlib import Path

    from modelcanary.registry import Registry
    from modelcanary.report import load_rollout, resolve_rollout_id, write_report

    registry = Registry("http://127.0.0.1:15000")
    rollout = load_rollout(registry, resolve_rollout_id(registry, "demo-classifier"))
    write_report(rollout, Path("report.html"))
"""

from __future__ import annotations

from modelcanary.report.attach import (
    REPORT_ARTIFACT,
    attach_report,
    report_when_finished,
    write_report,
)
from modelcanary.report.frames import (
    arms_frame,
    decisions_frame,
    drift_frame,
    gates_frame,
    srm_frame,
)
from modelcanary.report.html import evidence_sentence, render_html
from modelcanary.report.mlflow_source import DRIFT_ARTIFACTS, load_rollout, resolve_rollout_id
from modelcanary.report.plots import plot_arms, plot_drift, plot_gates, plot_traffic
from modelcanary.report.timeline import GatePoint, Rollout

__all__ = [
    "DRIFT_ARTIFACTS",
    "REPORT_ARTIFACT",
    "GatePoint",
    "Rollout",
    "arms_frame",
    "attach_report",
    "decisions_frame",
    "drift_frame",
    "evidence_sentence",
    "gates_frame",
    "load_rollout",
    "plot_arms",
    "plot_drift",
    "plot_gates",
    "plot_traffic",
    "render_html",
    "report_when_finished",
    "resolve_rollout_id",
    "srm_frame",
    "write_report",
]
