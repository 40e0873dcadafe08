"""Reports from a real MLflow store: load, attach, the CLI, and the review notebook.

The store is filled once per module with two small rollouts judged by the real judge
(tests/simulated_rollout.py) and recorded by the real audit log, as the controller
records them: a good candidate (shadow, then two canary steps, promoted; its last run
carries Evidently's drift.html) and a bad one (rolled back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from typer.testing import CliRunner

import modelcanary.cli.commands  # noqa: F401  (attaches the commands to `app`)
from modelcanary.audit import ARTIFACTS_TAG, AuditLog
from modelcanary.cli.app import app
from modelcanary.errors import RegistryError
from modelcanary.registry import Registry
from modelcanary.report import (
    REPORT_ARTIFACT,
    attach_report,
    load_rollout,
    report_when_finished,
    resolve_rollout_id,
)
from modelcanary.workers import ReportWriter
from tests.simulated_rollout import BAD, GOOD, record, register_versions, simulate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "review_rollout.ipynb"


@dataclass(frozen=True)
class Store:
    uri: str
    model: str
    good_id: str
    bad_id: str
    good_runs: list[str]
    good_events: list[str]


@pytest.fixture(scope="module")
def store(mlflow_uri: str) -> Iterator[Store]:
    registry = Registry(mlflow_uri)
    model = f"report-{uuid.uuid4().hex[:8]}"
    v1, v2, v3 = register_versions(registry, model, 3)
    good = simulate(model, GOOD, versions=(v1, v2))
    good_runs = record(registry, good, with_evidently=True)
    bad = simulate(model, BAD, versions=(v2, v3), seed=11)  # against the new champion
    record(registry, bad)
    yield Store(
        mlflow_uri,
        model,
        good.rollout_id,
        bad.rollout_id,
        good_runs,
        [d.event_id for d in good.decisions],
    )


def test_load_reads_every_decision_in_order(store: Store) -> None:
    registry = Registry(store.uri)
    rollout = load_rollout(registry, store.good_id)
    assert [d["event_id"] for d in rollout.decisions] == store.good_events
    assert list(rollout.run_ids) == store.good_runs
    assert rollout.outcome == "promoted"
    assert set(rollout.attachments) == {"drift.html"}
    drift = rollout.attachments["drift.html"]
    assert "mean_radius" in drift and "Wasserstein" in drift  # inputs drift, from Evidently
    assert '"output"' in drift  # and the predictions' drift, in the same report
    assert resolve_rollout_id(registry, store.model) == store.bad_id  # the newest
    with pytest.raises(RegistryError, match="no decisions are recorded"):
        load_rollout(registry, "no-such-rollout")


def test_report_when_finished(store: Store, tmp_path: Path) -> None:
    registry = Registry(store.uri)
    path = report_when_finished(registry, store.bad_id, tmp_path / "bad.html", timeout_s=5)
    assert "rolled back" in path.read_text(encoding="utf-8")
    with pytest.raises(RegistryError, match="no decisions are recorded"):
        report_when_finished(registry, "no-such-rollout", tmp_path / "x.html", timeout_s=0.3)
    assert not (tmp_path / "x.html").exists()


def test_runs_carry_gate_metrics_by_name(store: Store) -> None:
    run = Registry(store.uri).client.get_run(store.good_runs[-1])
    metrics = run.data.metrics
    assert {"gate.accuracy.estimate", "gate.accuracy.lower", "gate.accuracy.upper"} <= set(metrics)
    assert run.data.tags[ARTIFACTS_TAG] == "drift.html"
    assert run.data.params["policy.alpha"] == "0.05"


def test_attach_report_logs_it_on_the_decision_run(store: Store, tmp_path: Path) -> None:
    registry = Registry(store.uri)
    path = attach_report(registry, store.good_id, out=tmp_path / "good.html")
    terminal = store.good_runs[-1]  # the promote: the newest run that is not a hold
    audit = AuditLog(registry)
    assert audit.read_text(terminal, REPORT_ARTIFACT) == path.read_text(encoding="utf-8")
    tags = registry.client.get_run(terminal).data.tags
    assert tags[ARTIFACTS_TAG] == "drift.html,report.html"
    html = path.read_text(encoding="utf-8")
    assert "promoted" in html and "<iframe" in html
    # an explicit run id wins (the controller passes the run it just recorded)
    attach_report(registry, store.good_id, run_id=store.good_runs[0], out=tmp_path / "x.html")
    assert REPORT_ARTIFACT in audit.artifact_names(registry.client.get_run(store.good_runs[0]))


def test_cli_writes_the_latest_rollouts_report(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCANARY_MLFLOW_URI", store.uri)
    runner = CliRunner()
    out = tmp_path / "latest.html"
    result = runner.invoke(app, ["report", store.model, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rolled back" in result.output and str(out) in result.output.replace("\n", "")
    assert "rolled back" in out.read_text(encoding="utf-8")
    chosen = tmp_path / "good.html"
    result = runner.invoke(
        app, ["report", store.model, "--rollout", store.good_id, "--out", str(chosen)]
    )
    assert result.exit_code == 0 and "promoted" in chosen.read_text(encoding="utf-8")
    result = runner.invoke(app, ["report", "other-model", "--rollout", store.good_id])
    assert result.exit_code != 0 and isinstance(result.exception, RegistryError)


def test_review_notebook_runs_top_to_bottom(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCANARY_MLFLOW_URI", store.uri)
    monkeypatch.setenv("MODELCANARY_MODEL", store.model)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{store.model}: version 3 against champion version 2 -> rolled back" in printed
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # traffic, gates, arms, drift
    nbformat.write(notebook, tmp_path / "review_rollout.executed.ipynb")


def test_the_controllers_report_writer_survives_a_failing_report(store: Store) -> None:
    registry = Registry(store.uri)
    writer = ReportWriter(registry)
    writer.start()
    writer.submit("no-such-rollout", store.good_runs[1], "promote")  # fails: logged, skipped
    writer.submit(store.bad_id, store.good_runs[1], "rollback")
    writer.close(timeout_s=60)
    assert not writer.is_alive() and writer.written == 1
    run = registry.client.get_run(store.good_runs[1])
    assert REPORT_ARTIFACT in AuditLog(registry).artifact_names(run)
