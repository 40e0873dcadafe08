"""Load a rollout's recorded evaluations from MLflow (the audit trail) for a report.

Each decision the controller recorded is a run of the ``modelcanary-rollouts``
experiment holding ``decision.json`` (:mod:`modelcanary.audit`). Loading a rollout
reads every one of them, holds included (one per judge interval while the rollout
runs), downloading up to :data:`PARALLEL_DOWNLOADS` at a time, plus the newest
Evidently drift report any of its runs carries.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from modelcanary.audit import AuditLog
from modelcanary.errors import RegistryError
from modelcanary.registry import Registry
from modelcanary.report.timeline import Rollout

#: Evidently HTML artifacts a decision run may carry, embedded in the report if present
#: (:func:`modelcanary.report.extras.evidently_html` makes ``drift.html``).
DRIFT_ARTIFACTS = ("drift.html",)
PARALLEL_DOWNLOADS = 8


def resolve_rollout_id(registry: Registry, model: str, rollout_id: str | None = None) -> str:
    """``rollout_id`` if given, else the model's rollout with the newest recorded decision."""
    if rollout_id:
        return rollout_id
    found = AuditLog(registry).latest_rollout_id(model)
    if not found:
        raise RegistryError(
            f"no decisions are recorded for {model!r} in MLflow at {registry.tracking_uri}: "
            "start a rollout (`modelcanary rollout start`) and run `modelcanary control`"
        )
    return found


def load_rollout(registry: Registry, rollout_id: str) -> Rollout:
    """Every recorded decision of a rollout, oldest first, with its drift reports."""
    # One tqdm bar per downloaded decision would bury a terminal; an explicit setting wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    audit = AuditLog(registry)
    runs = audit.runs(rollout_id)
    if not runs:
        raise RegistryError(
            f"no decisions are recorded for rollout {rollout_id!r} in MLflow at "
            f"{registry.tracking_uri} (`modelcanary history MODEL --holds` lists rollouts)"
        )
    run_ids = [run.info.run_id for run in runs]
    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
        decisions = list(pool.map(audit.decision, run_ids))
    attachments: dict[str, str] = {}
    for run in reversed(runs):
        names = [n for n in DRIFT_ARTIFACTS if n in audit.artifact_names(run)]
        if names:
            attachments = {n: audit.read_text(run.info.run_id, n) for n in names}
            break
    return Rollout.from_decisions(decisions, run_ids, attachments)
