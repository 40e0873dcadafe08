"""Audit trail in MLflow: one run per decision, linked to both model versions.

Each run lives in the experiment ``modelcanary-rollouts`` and carries:

- tags: model, rollout id, action, from/to state, champion and challenger versions,
  the decision's event id (the idempotency key: recording twice is a no-op), applied;
- params: the policy in force, flattened (``steps.0.traffic_fraction`` ...);
- metrics: every numeric leaf of the evidence (``gates.0.estimate`` ...) and, per gate,
  the same numbers under its name (``gate.accuracy.estimate``, ``.lower``, ``.upper``,
  ``.champion``, ``.challenger``, ``.samples_needed``) so runs compare by gate in the UI;
- artifacts: ``decision.json`` (the whole event), ``policy.json``, and any extra text
  artifacts given (an Evidently ``drift.html``; later the ``report.html`` of
  :func:`modelcanary.report.attach_report`), listed in the tag ``modelcanary.artifacts``.

Both model versions get the tag ``modelcanary.last_evaluation_run`` pointing at it, so
the evaluation is one click away from the model in the MLflow UI.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag

from modelcanary.events import DecisionEvent, to_dict
from modelcanary.policy import Policy
from modelcanary.registry import Registry

EXPERIMENT = "modelcanary-rollouts"
MAX_METRICS = 900
MAX_PARAM_VALUE = 6000
_TAG = "modelcanary."
#: Run tag listing the extra artifacts of a decision run, comma-separated.
ARTIFACTS_TAG = f"{_TAG}artifacts"
_GATE_NUMBERS = ("estimate", "champion", "challenger", "samples_needed")


@dataclass(frozen=True)
class AuditEntry:
    """One recorded decision, as `modelcanary history` lists it."""

    run_id: str
    ts: float
    rollout_id: str
    action: str
    from_state: str
    to_state: str
    traffic_fraction: float
    reason: str
    applied: bool


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of nested dicts/lists as ``(dotted.path, value)`` pairs."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}{key}.")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), value


def _metric_key(path: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in path)[:250]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def gate_metrics(evidence: Mapping[str, Any]) -> dict[str, float]:
    """Each gate's numbers keyed by its name: ``gate.<name>.estimate`` ... ``.lower``."""
    out: dict[str, float] = {}
    gates = evidence.get("gates")
    for gate in gates if isinstance(gates, list) else []:
        if not isinstance(gate, Mapping):
            continue
        prefix = f"gate.{gate.get('gate')}."
        values: dict[str, Any] = {k: gate.get(k) for k in _GATE_NUMBERS}
        interval = gate.get("interval")
        if isinstance(interval, list | tuple) and len(interval) == 2:
            values["lower"], values["upper"] = interval
        values["samples.challenger"] = (gate.get("samples") or {}).get("challenger")
        for name, value in values.items():
            x = _number(value)
            if x is not None:
                out[_metric_key(prefix + name)] = x
    return out


class AuditLog:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._experiment_id: str | None = None

    def _experiment(self) -> str:
        if self._experiment_id is None:
            client = self.registry.client
            with self.registry.translated(f"experiment {EXPERIMENT}"):
                found = client.get_experiment_by_name(EXPERIMENT)
                self._experiment_id = (
                    found.experiment_id if found else client.create_experiment(EXPERIMENT)
                )
        return self._experiment_id

    def _existing(self, event_id: str) -> Run | None:
        with self.registry.translated("audit runs"):
            runs = self.registry.client.search_runs(
                [self._experiment()],
                filter_string=f"tags.`{_TAG}event_id` = '{event_id}'",
                max_results=1,
            )
        return runs[0] if runs else None

    def record(
        self,
        decision: DecisionEvent,
        policy: Policy | None,
        applied: bool,
        champion_version: str,
        challenger_version: str,
        artifacts: Mapping[str, str] | None = None,
    ) -> str:
        """Write the decision as a run (once per event id); return the run id.

        Order: create the run (tagged with the event id), log metrics/params/tags and
        artifacts, mark it finished, then tag both model versions. A retry after a failure
        at any step finds the unfinished run by its event id and completes it.

        ``artifacts`` maps file names to text logged with the run (e.g. ``drift.html``).
        """
        existing = self._existing(decision.event_id)
        if existing is not None and existing.info.status == "FINISHED":
            self._link_versions(decision.model, existing.info.run_id, champion_version,
                                challenger_version)  # fmt: skip
            return existing.info.run_id
        client = self.registry.client
        tags = {
            f"{_TAG}model": decision.model,
            f"{_TAG}rollout_id": decision.rollout_id,
            f"{_TAG}action": decision.action.value,
            f"{_TAG}from_state": decision.from_state,
            f"{_TAG}to_state": decision.to_state,
            f"{_TAG}event_id": decision.event_id,
            f"{_TAG}applied": str(applied).lower(),
            f"{_TAG}champion_version": champion_version,
            f"{_TAG}challenger_version": challenger_version,
            f"{_TAG}reason": decision.reason[:5000],
            f"{_TAG}traffic_fraction": str(decision.traffic_fraction),
            "mlflow.note.content": decision.reason[:5000],
        }
        now_ms = int(time.time() * 1000)
        named = [Metric(k, v, now_ms, 0) for k, v in gate_metrics(decision.evidence).items()]
        metrics = [
            *named,
            *(
                Metric(_metric_key(path), float(value), now_ms, 0)
                for path, value in flatten(decision.evidence)
                if isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ),
        ][:MAX_METRICS]
        metrics.append(Metric("traffic_fraction", decision.traffic_fraction, now_ms, 0))
        if artifacts:
            tags[ARTIFACTS_TAG] = ",".join(sorted(artifacts))
        params = [
            Param(_metric_key(f"policy.{path}"), str(value)[:MAX_PARAM_VALUE])
            for path, value in flatten(policy.to_dict() if policy else {})
        ][:100]
        run_name = f"{decision.action.value} {decision.from_state} -> {decision.to_state}"
        with self.registry.translated(f"audit run of {decision.rollout_id}"):
            # The run carries its event id from its creation, so a retry after a failure
            # at any later write finds it and completes it instead of starting another.
            if existing is None:
                run_id = client.create_run(
                    self._experiment(), run_name=run_name[:250], tags=tags
                ).info.run_id
            else:
                run_id = existing.info.run_id
            client.log_batch(
                run_id,
                metrics=metrics,
                params=params,
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            client.log_text(run_id, json.dumps(to_dict(decision), indent=2), "decision.json")
            if policy is not None:
                client.log_text(run_id, json.dumps(policy.to_dict(), indent=2), "policy.json")
            for name, text in (artifacts or {}).items():
                client.log_text(run_id, text, name)
            client.set_terminated(run_id)
        self._link_versions(decision.model, run_id, champion_version, challenger_version)
        return run_id

    def _link_versions(self, model: str, run_id: str, *versions: str) -> None:
        """Point both versions at the run (idempotent: a retry sets the same values)."""
        for version in set(versions):
            self.registry.set_version_tags(model, version, {f"{_TAG}last_evaluation_run": run_id})

    def history(self, model: str, include_holds: bool = False) -> list[AuditEntry]:
        """Recorded decisions of ``model``, oldest first."""
        filters = f"tags.`{_TAG}model` = '{model}'"
        if not include_holds:
            filters += f" and tags.`{_TAG}action` != 'hold'"
        with self.registry.translated("audit runs"):
            runs = self.registry.client.search_runs(
                [self._experiment()],
                filter_string=filters,
                order_by=["attributes.start_time ASC"],
                max_results=5000,
            )
        entries = []
        for run in runs:
            t = run.data.tags
            entries.append(
                AuditEntry(
                    run_id=run.info.run_id,
                    ts=run.info.start_time / 1000.0,
                    rollout_id=t.get(f"{_TAG}rollout_id", ""),
                    action=t.get(f"{_TAG}action", ""),
                    from_state=t.get(f"{_TAG}from_state", ""),
                    to_state=t.get(f"{_TAG}to_state", ""),
                    traffic_fraction=float(t.get(f"{_TAG}traffic_fraction", "0") or 0),
                    reason=t.get(f"{_TAG}reason", ""),
                    applied=t.get(f"{_TAG}applied") == "true",
                )
            )
        return entries

    def latest(self, rollout_id: str) -> dict[str, Any] | None:
        """The most recent recorded decision of a rollout (holds included), as a dict.

        Only finished runs count: a run being written may not have its artifacts yet."""
        with self.registry.translated("audit runs"):
            runs = self.registry.client.search_runs(
                [self._experiment()],
                filter_string=(
                    f"tags.`{_TAG}rollout_id` = '{rollout_id}' and attributes.status = 'FINISHED'"
                ),
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if not runs:
                return None
            path = self.registry.client.download_artifacts(runs[0].info.run_id, "decision.json")
        with open(path) as handle:
            return json.load(handle)

    # -- reading a rollout's runs (reports, notebooks) ----------------------------------
    def runs(self, rollout_id: str) -> list[Run]:
        """Every recorded decision run of a rollout (holds included), oldest first."""
        client = self.registry.client
        runs: list[Run] = []
        token: str | None = None
        with self.registry.translated(f"audit runs of {rollout_id}"):
            while True:
                page = client.search_runs(
                    [self._experiment()],
                    filter_string=f"tags.`{_TAG}rollout_id` = '{rollout_id}'",
                    order_by=["attributes.start_time ASC"],
                    max_results=1000,
                    page_token=token,
                )
                runs.extend(page)
                token = page.token
                if not token:
                    break
        return runs

    def latest_rollout_id(self, model: str) -> str | None:
        """The rollout of ``model`` with the most recent recorded decision, if any."""
        with self.registry.translated("audit runs"):
            runs = self.registry.client.search_runs(
                [self._experiment()],
                filter_string=f"tags.`{_TAG}model` = '{model}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        return runs[0].data.tags.get(f"{_TAG}rollout_id") if runs else None

    def read_text(self, run_id: str, name: str) -> str:
        """The text of one artifact of a run (``decision.json``, ``drift.html`` ...)."""
        with (
            tempfile.TemporaryDirectory() as tmp,
            self.registry.translated(f"artifact {name} of run {run_id}"),
        ):
            path = self.registry.client.download_artifacts(run_id, name, tmp)
            return Path(path).read_text(encoding="utf-8")

    def decision(self, run_id: str) -> dict[str, Any]:
        """The recorded decision event of a run, as a dict."""
        return json.loads(self.read_text(run_id, "decision.json"))

    def attach(self, run_id: str, name: str, text: str) -> None:
        """Log ``text`` as artifact ``name`` of an existing decision run (and list it in
        the run's ``modelcanary.artifacts`` tag)."""
        client = self.registry.client
        with self.registry.translated(f"artifact {name} of run {run_id}"):
            client.log_text(run_id, text, name)
            listed = client.get_run(run_id).data.tags.get(ARTIFACTS_TAG, "")
            names = sorted({*filter(None, listed.split(",")), name})
            client.set_tag(run_id, ARTIFACTS_TAG, ",".join(names))

    @staticmethod
    def artifact_names(run: Run) -> list[str]:
        """Extra artifacts a run lists in its ``modelcanary.artifacts`` tag."""
        return [n for n in run.data.tags.get(ARTIFACTS_TAG, "").split(",") if n]
