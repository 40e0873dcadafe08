"""Write a rollout's report to a file, and attach it to the rollout's decision run in MLflow.

:func:`attach_report` is what the controller calls after recording a decision that
moved the rollout (advance, promote, roll back, halt, abort), so each such run carries
the report of the whole rollout up to it as ``report.html``, next to ``decision.json``
in the MLflow UI.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from modelcanary.audit import AuditLog
from modelcanary.errors import RegistryError
from modelcanary.registry import Registry
from modelcanary.report.html import render_html
from modelcanary.report.mlflow_source import load_rollout
from modelcanary.report.timeline import Rollout

REPORT_ARTIFACT = "report.html"


def write_report(rollout: Rollout, path: Path) -> Path:
    """Render ``rollout`` into ``path`` (parents created); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(rollout), encoding="utf-8")
    return path


def default_report_path(rollout_id: str) -> Path:
    return Path(tempfile.gettempdir()) / "modelcanary-reports" / f"{rollout_id}.html"


def attach_report(
    registry: Registry,
    rollout_id: str,
    run_id: str | None = None,
    out: Path | None = None,
) -> Path:
    """Render the rollout's report from MLflow, log it as ``report.html`` of its decision
    run, and return the local copy's path.

    ``run_id`` is the run to attach to (what :meth:`AuditLog.record` returned); by
    default the rollout's newest run that is not a hold. ``out`` is where the local copy
    goes (default: ``<tmp>/modelcanary-reports/<rollout_id>.html``).
    """
    rollout = load_rollout(registry, rollout_id)
    target = run_id or _latest_move(rollout)
    path = write_report(rollout, out or default_report_path(rollout_id))
    AuditLog(registry).attach(target, REPORT_ARTIFACT, path.read_text(encoding="utf-8"))
    return path


def report_when_finished(
    registry: Registry,
    rollout_id: str,
    out: Path,
    timeout_s: float = 15.0,
    poll_s: float = 0.5,
) -> Path:
    """Write the rollout's report once its terminal decision is recorded in MLflow.

    The controller moves the rollout's state before it records the decision (see
    :func:`modelcanary.workers.run_controller`), so a caller that sees the rollout end
    may look before the last run exists; this waits up to ``timeout_s`` for it, then
    writes the report of whatever is recorded (a RegistryError if nothing is).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rollout = load_rollout(registry, rollout_id)
        except RegistryError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(poll_s)
            continue
        if rollout.finished or time.monotonic() >= deadline:
            return write_report(rollout, out)
        time.sleep(poll_s)


def _latest_move(rollout: Rollout) -> str:
    pairs = list(zip(rollout.decisions, rollout.run_ids, strict=True))
    for decision, run_id in reversed(pairs):
        if decision.get("action") != "hold":
            return run_id
    if not pairs:
        raise RegistryError(f"rollout {rollout.rollout_id} has no recorded run")
    return pairs[-1][1]
