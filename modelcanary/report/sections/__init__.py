"""The report's sections, each a function of the rollout returning an HTML fragment.

The order follows the questions a reader asks: what was decided and why (the header,
in :mod:`modelcanary.report.html`), the gates, latency, errors, KPIs, drift, the
sample-ratio check, the SLO error budgets, shadow agreement, the policy in force, and
the timeline of steps and decisions.
"""

from __future__ import annotations

from modelcanary.report.sections.arms import errors, latency, shadow
from modelcanary.report.sections.checks import drift, slos, srm
from modelcanary.report.sections.context import policy, timeline
from modelcanary.report.sections.gates import gate_details, gates_overview, kpis

__all__ = [
    "drift",
    "errors",
    "gate_details",
    "gates_overview",
    "kpis",
    "latency",
    "policy",
    "shadow",
    "slos",
    "srm",
    "timeline",
]
