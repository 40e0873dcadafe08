"""Stage 1 of the judge: turn events into per-arm metric values.

A joined request contributes, per arm that produced a usable answer, one value per
metric that its prediction, score and outcome allow:

    accuracy    1 if prediction == label else 0          (any label)
    log_loss    -log P(label), P(1) = score clipped to [1e-15, 1 - 1e-15]   (label 0/1)
    brier       (score - label)^2                          (label 0/1)
    mae / mse   |prediction - label|, (prediction - label)^2   (numeric label)
    kpi.<name>  the outcome's KPI value, credited to the arm the request was routed to

``score`` is the probability of the positive class (label 1) of a binary classifier.
In canary mode a request belongs to the arm it was routed to: the challenger if it
has a challenger prediction (a failed challenger whose user got the champion's answer
still counts as the challenger's request: its KPIs are the challenger's, and it gives
no quality values because the challenger gave no answer). In shadow mode both arms
answered the same request and the values are paired; KPIs are not attributed because
the user saw only the champion's answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.join import JoinedRequest
from modelcanary.policy import KPI_PREFIX

LOG_LOSS_EPS = 1e-15
NO_STEP = -1
_ONE_MINUS_EPS = 1.0 - LOG_LOSS_EPS
_isfinite = math.isfinite
_log = math.log
# Enum members as globals: ``Arm.CHALLENGER`` is a lookup through the enum class, about
# ten times a global's cost, and request_parts runs for every joined request.
_CHALLENGER, _CHAMPION, _SHADOW = Arm.CHALLENGER, Arm.CHAMPION, Mode.SHADOW


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (bools, text, NaN, ints beyond float range)."""
    kind = type(value)
    if kind is float:
        return value if _isfinite(value) else None
    if kind is int:  # the float of an int is finite, or OverflowError
        try:
            return float(value)
        except OverflowError:
            return None
    if kind is bool or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:  # an integer beyond float range (JSON allows them)
        return None
    return x if _isfinite(x) else None


def _binary(label: Any) -> float | None:
    if label is True or label is False:
        return float(label)
    x = _number(label)
    return x if x in (0.0, 1.0) else None


def _same(prediction: Any, label: Any) -> bool:
    p, y = _number(prediction), _number(label)
    if p is not None and y is not None:
        return p == y
    if isinstance(prediction, bool) or isinstance(label, bool):
        return _binary(prediction) == _binary(label) and _binary(label) is not None
    return str(prediction) == str(label)


def quality_values(prediction: PredictionEvent, outcome: OutcomeEvent | None) -> dict[str, float]:
    """Per-request quality metric values of one arm's answer (empty without a label)."""
    if outcome is None or outcome.label is None or prediction.error is not None:
        return {}
    label, pred, score = outcome.label, prediction.prediction, prediction.score
    # The definitions above, with each conversion done once (this runs per joined
    # request), floats and ints converted inline (what _number does for them).
    kind = type(pred)
    if kind is float:
        p = pred if _isfinite(pred) else None
    elif kind is int:
        try:
            p = float(pred)
        except OverflowError:
            p = None
    else:
        p = _number(pred)
    kind = type(label)
    if kind is int:
        try:
            yv: float | None = float(label)
        except OverflowError:
            yv = None
    elif kind is float:
        yv = label if _isfinite(label) else None
    else:
        yv = _number(label)
    if label is True or label is False:
        y: float | None = float(label)
    else:
        y = yv if yv == 0.0 or yv == 1.0 else None
    out: dict[str, float] = {}
    if pred is not None:
        if p is not None and yv is not None:
            same = p == yv
        elif isinstance(pred, bool) or isinstance(label, bool):
            same = y is not None and _binary(pred) == y
        else:
            same = str(pred) == str(label)
        out["accuracy"] = 1.0 if same else 0.0
    if score is not None and y is not None and 0.0 <= score <= 1.0:  # (so finite: NaN fails)
        # p1 = min(max(score, LOG_LOSS_EPS), 1 - LOG_LOSS_EPS), the same comparisons inline
        p1 = LOG_LOSS_EPS if score < LOG_LOSS_EPS else score
        if p1 > _ONE_MINUS_EPS:
            p1 = _ONE_MINUS_EPS
        out["log_loss"] = -_log(p1 if y == 1.0 else 1.0 - p1)
        out["brier"] = (score - y) ** 2
    if p is not None and yv is not None:
        out["mae"] = abs(p - yv)
        out["mse"] = (p - yv) ** 2
    return out


def step_of(prediction: PredictionEvent) -> int:
    return prediction.step if prediction.step is not None else NO_STEP


@dataclass(frozen=True)
class RequestValues:
    """What one joined request contributes to the evidence."""

    mode: Mode
    step: int
    arm_values: dict[Arm, dict[str, float]] = field(default_factory=dict)  # canary
    paired: dict[str, tuple[float, float]] = field(default_factory=dict)  # shadow: (chal, champ)


def request_values(request: JoinedRequest) -> RequestValues | None:
    """Stage 1 for a joined request; None when it carries nothing to compare."""
    parts = request_parts(request)
    if parts is None:
        return None
    step, arm, values = parts
    if arm is None:
        return RequestValues(Mode.SHADOW, step, paired=values)
    return RequestValues(Mode.CANARY, step, arm_values={arm: values})


def request_parts(
    request: JoinedRequest,
) -> tuple[int, Arm | None, dict[str, Any]] | None:
    """:func:`request_values` unwrapped, for the evaluator's hot path: ``(step, arm,
    values)`` in canary mode (the routed arm and its metric values), ``(step, None,
    paired values)`` in shadow mode; None when the request carries nothing to compare."""
    predictions = request.predictions
    if not predictions:
        return None
    outcome = request.outcome
    if next(iter(predictions.values())).mode is _SHADOW:
        challenger = predictions.get(_CHALLENGER)
        champion = predictions.get(_CHAMPION)
        if challenger is None or champion is None:
            return None
        xs, ys = quality_values(challenger, outcome), quality_values(champion, outcome)
        paired = {m: (xs[m], ys[m]) for m in xs.keys() & ys.keys()}
        return step_of(challenger), None, paired
    routed = _CHALLENGER if _CHALLENGER in predictions else _CHAMPION
    prediction = predictions[routed]
    values: dict[str, Any] = quality_values(prediction, outcome)
    if outcome is not None:
        for name, value in outcome.kpis.items():
            x = _number(value)
            if x is not None:
                values[f"{KPI_PREFIX}{name}"] = x
    step = prediction.step
    return (step if step is not None else NO_STEP), routed, values
