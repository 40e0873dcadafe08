"""A rollout's evaluations as pandas DataFrames, for notebooks and ad-hoc analysis.

Same data as the HTML report (:class:`~modelcanary.report.timeline.Rollout`), one row
per evaluation (and per gate, per arm or per column where that applies); ``t`` is
seconds since the rollout started.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from modelcanary.report.timeline import Rollout, gate_specs


def decisions_frame(rollout: Rollout) -> pd.DataFrame:
    """One row per recorded decision: when, what, at which traffic, and why."""
    rows = []
    for decision in rollout.decisions:
        step = (decision.get("evidence") or {}).get("step") or {}
        rows.append(
            {
                "t": rollout.t(decision),
                "action": decision.get("action"),
                "from_state": decision.get("from_state"),
                "to_state": decision.get("to_state"),
                "step": step.get("index"),
                "mode": step.get("mode"),
                "traffic_fraction": decision.get("traffic_fraction"),
                "challenger_samples_in_step": step.get("challenger_samples"),
                "reason": decision.get("reason"),
            }
        )
    return pd.DataFrame(rows)


def gates_frame(rollout: Rollout) -> pd.DataFrame:
    """One row per gate per evaluation: estimate, anytime-valid bounds, tolerance, samples."""
    specs = gate_specs(rollout.policy)
    rows = []
    for label, points in rollout.gate_series().items():
        spec = specs.get(label)
        for point in points:
            row = asdict(point)
            row["gate"] = label
            row["metric"] = spec.metric if spec else label
            row["critical"] = spec.critical if spec else None
            rows.append(row)
    columns = ["gate", "metric", "critical", "t", "step", "verdict", "estimate", "lower",
               "upper", "tolerance", "champion", "challenger", "samples_challenger",
               "samples_champion", "samples_needed"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def arms_frame(rollout: Rollout) -> pd.DataFrame:
    """One row per arm per evaluation: predictions, errors, error rate, latency quantiles
    (when the evidence carries a latency summary)."""
    rows = []
    for decision in rollout.judged():
        evidence = decision["evidence"]
        samples = evidence.get("samples") or {}
        latency = evidence.get("latency") or {}
        for arm in ("champion", "challenger"):
            n = (samples.get("predictions") or {}).get(arm) or 0
            errors = (samples.get("errors") or {}).get(arm) or 0
            row = {
                "t": rollout.t(decision),
                "arm": arm,
                "predictions": n,
                "errors": errors,
                "error_rate": errors / n if n else None,
            }
            for key in ("mean", "p50", "p90", "p95", "p99"):
                row[f"latency_{key}"] = (latency.get(arm) or {}).get(key)
            rows.append(row)
    return pd.DataFrame(rows)


def drift_frame(rollout: Rollout) -> pd.DataFrame:
    """Per column, the final evidence's drift score, threshold and verdict, inputs and
    predictions, most drifted first."""
    rows = []
    for kind in ("input_drift", "prediction_drift"):
        report = (rollout.evidence.get("drift") or {}).get(kind) or {}
        for column, result in (report.get("columns") or {}).items():
            rows.append({"kind": kind, "column": column, **result})
    frame = pd.DataFrame(rows, columns=["kind", "column", "method", "score", "threshold",
                                        "drifted"])  # fmt: skip
    return frame.sort_values(["kind", "drifted", "score"], ascending=[True, False, False])


def srm_frame(rollout: Rollout) -> pd.DataFrame:
    """The sample-ratio test per evaluation: log e-value against its threshold."""
    values = dict(rollout.series("srm", "log_evalue"))
    threshold = dict(rollout.series("srm", "threshold_log_evalue"))
    return pd.DataFrame(
        [{"t": t, "log_evalue": v, "threshold": threshold.get(t)} for t, v in values.items()]
    )
