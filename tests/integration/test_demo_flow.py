"""The demo's flow in miniature: real broker, MLflow server, bentoml serve, evaluator and
controller processes; one candidate promoted, one rolled back, nothing left running."""

from __future__ import annotations

import dataclasses
import io

import psutil
import pytest
from rich.console import Console

from modelcanary.config import Settings
from modelcanary.demo import demo_policy, demo_succeeded, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_good_candidate_promoted_bad_one_rolled_back(tmp_path) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    output = io.StringIO()
    console = Console(file=output, width=140)
    policy = demo_policy()
    policy = dataclasses.replace(
        policy,
        steps=tuple(
            dataclasses.replace(s, traffic_fraction=f)
            for s, f in zip(policy.steps[:2], (0.2, 0.5), strict=True)
        ),
    )
    results = run_demo(
        Settings(data_dir=tmp_path), console, policy=policy, rate_per_s=250, max_rollout_s=150
    )
    text = output.getvalue()
    assert demo_succeeded(results), text
    good, bad = results
    assert good.decision is not None and bad.decision is not None
    assert "accuracy" in bad.decision.reason
    assert good.traffic.failed == 0 and bad.traffic.failed == 0, text
    assert "promote" in text and "rollback" in text
    for result in results:
        assert result.report is not None and result.report.exists(), text
        assert "<html" in result.report.read_text()[:2000].lower()
    alive = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], f"the demo left processes running: {alive}"
    assert not (tmp_path / "demo" / "infra.json").exists()
