"""The audit trail against a real MLflow server."""

from __future__ import annotations

import uuid

import pytest

from modelcanary.audit import AuditLog, flatten
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.events import Action, DecisionEvent
from modelcanary.policy import default_policy
from modelcanary.registry import Registry

pytestmark = pytest.mark.integration


def test_flatten_paths() -> None:
    assert dict(flatten({"a": {"b": 1, "c": [2, {"d": 3}]}})) == {
        "a.b": 1,
        "a.c.0": 2,
        "a.c.1.d": 3,
    }


def test_each_decision_is_one_run_linked_to_both_versions(mlflow_uri: str) -> None:
    registry = Registry(mlflow_uri)
    model = f"audit-{uuid.uuid4().hex[:8]}"
    dataset = load_demo_dataset()
    v1 = registry.register_sklearn(
        model, train_variant("baseline", dataset), dataset.X_train.head(2)
    )
    v2 = registry.register_sklearn(model, train_variant("bad", dataset), dataset.X_train.head(2))
    audit = AuditLog(registry)
    hold = DecisionEvent(
        model=model,
        rollout_id="r1",
        action=Action.HOLD,
        from_state="running:0",
        to_state="running:0",
        traffic_fraction=0.05,
        reason="not enough samples yet",
        evidence={"gates": {"accuracy": {"estimate": -0.01, "n": 40}}},
    )
    rollback = DecisionEvent(
        model=model,
        rollout_id="r1",
        action=Action.ROLLBACK,
        from_state="running:0",
        to_state="rolled_back",
        traffic_fraction=0.0,
        reason="accuracy is worse by 0.18",
        evidence={"gates": {"accuracy": {"estimate": -0.18, "n": 400, "passed": False}}},
    )
    audit.record(hold, default_policy(), False, v1, v2)
    run_id = audit.record(rollback, default_policy(), True, v1, v2)
    assert audit.record(rollback, default_policy(), True, v1, v2) == run_id

    entries = audit.history(model)
    assert [(e.action, e.applied) for e in entries] == [("rollback", True)]
    assert len(audit.history(model, include_holds=True)) == 2
    assert entries[0].reason == "accuracy is worse by 0.18"

    run = registry.client.get_run(run_id)
    assert run.data.metrics["gates.accuracy.estimate"] == pytest.approx(-0.18)
    assert run.data.params["policy.steps.0.traffic_fraction"] == "0.05"
    for version in (v1, v2):
        assert registry.version_tags(model, version)["modelcanary.last_evaluation_run"] == run_id
    latest = audit.latest("r1")
    assert latest is not None and latest["event_id"] == rollback.event_id
