"""Stage 1: per-request metric values, checked against scikit-learn on raw samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.join import JoinedRequest
from modelcanary.judge.clean import quality_values, request_values


def _pred(arm: Arm = Arm.CHAMPION, mode: Mode = Mode.CANARY, **kw: object) -> PredictionEvent:
    base: dict[str, object] = {
        "model": "m",
        "request_id": "r",
        "version": "1",
        "arm": arm,
        "mode": mode,
        "served": True,
        "prediction": 1,
    }
    base.update(kw)
    return PredictionEvent(**base)  # type: ignore[arg-type]


def test_classification_values_average_to_sklearn_metrics() -> None:
    rng = np.random.default_rng(21)
    y = rng.integers(0, 2, 3000)
    score = np.clip(rng.beta(2, 2, 3000) * 0.6 + 0.4 * y, 0.0, 1.0)
    score[:5] = [0.0, 1.0, 1.0, 0.0, 0.5]
    pred = (score >= 0.5).astype(int)
    rows = [
        quality_values(
            _pred(prediction=int(p), score=float(s)), OutcomeEvent("m", "r", label=int(t))
        )
        for p, s, t in zip(pred, score, y, strict=True)
    ]
    assert np.mean([r["accuracy"] for r in rows]) == pytest.approx(metrics.accuracy_score(y, pred))
    assert np.mean([r["log_loss"] for r in rows]) == pytest.approx(
        metrics.log_loss(y, np.clip(score, 1e-15, 1 - 1e-15)), rel=1e-9
    )
    assert np.mean([r["brier"] for r in rows]) == pytest.approx(metrics.brier_score_loss(y, score))


def test_regression_values_average_to_sklearn_metrics() -> None:
    rng = np.random.default_rng(22)
    y = rng.normal(10, 3, 1000)
    pred = y + rng.normal(0, 1, 1000)
    rows = [
        quality_values(_pred(prediction=float(p)), OutcomeEvent("m", "r", label=float(t)))
        for p, t in zip(pred, y, strict=True)
    ]
    assert np.mean([r["mae"] for r in rows]) == pytest.approx(metrics.mean_absolute_error(y, pred))
    assert np.sqrt(np.mean([r["mse"] for r in rows])) == pytest.approx(
        metrics.root_mean_squared_error(y, pred)
    )


def test_no_values_without_label_or_for_a_failed_call() -> None:
    assert quality_values(_pred(), OutcomeEvent("m", "r", label=None)) == {}
    assert quality_values(_pred(), None) == {}
    assert (
        quality_values(_pred(error="timeout", prediction=None), OutcomeEvent("m", "r", label=1))
        == {}
    )
    assert quality_values(_pred(prediction="cat"), OutcomeEvent("m", "r", label="cat")) == {
        "accuracy": 1.0
    }


def test_canary_request_belongs_to_the_routed_arm_with_its_kpis() -> None:
    failed = _pred(Arm.CHALLENGER, served=False, error="boom", prediction=None)
    fallback = _pred(Arm.CHAMPION, prediction=1, step=2)
    outcome = OutcomeEvent("m", "r", label=1, kpis={"converted": 1.0, "revenue": 9.5})
    values = request_values(
        JoinedRequest("r", {Arm.CHALLENGER: failed, Arm.CHAMPION: fallback}, outcome)
    )
    assert values is not None
    assert values.arm_values == {Arm.CHALLENGER: {"kpi.converted": 1.0, "kpi.revenue": 9.5}}


def test_shadow_request_is_paired_and_has_no_kpis() -> None:
    chal = _pred(Arm.CHALLENGER, Mode.SHADOW, served=False, prediction=0, step=0)
    champ = _pred(Arm.CHAMPION, Mode.SHADOW, prediction=1, step=0)
    outcome = OutcomeEvent("m", "r", label=1, kpis={"converted": 1.0})
    values = request_values(
        JoinedRequest("r", {Arm.CHALLENGER: chal, Arm.CHAMPION: champ}, outcome)
    )
    assert values is not None
    assert values.paired == {"accuracy": (0.0, 1.0), "mae": (1.0, 0.0), "mse": (1.0, 0.0)}
    assert values.arm_values == {}
    lonely = JoinedRequest("r", {Arm.CHAMPION: champ}, outcome)
    assert request_values(lonely) is None
