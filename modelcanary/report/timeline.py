"""A rollout's recorded decisions as a timeline: the data every report view is drawn from.

Input is what the audit trail stores: one decision dict per evaluation (the
:class:`~modelcanary.events.DecisionEvent` as JSON, holds included), each carrying the
judge's evidence. Nothing here touches MLflow or a file; :mod:`.mlflow_source` loads the
dicts and :mod:`.html` renders them.

Every number is on the scale the judge used: a gate's ``estimate`` is challenger minus
champion in the metric's units and ``interval`` its anytime-valid bounds. The
*tolerance* of a gate is the difference beyond which the challenger counts as worse
than the margin (``-m`` for an absolute margin on a higher-is-better metric, ``+r x
champion`` for a relative one on a lower-is-better metric, the quantile gate's
``tolerated - champion``): the gate passes once the interval lies wholly on the good
side of it, and fails once it lies wholly on the bad side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LATENCY_LINES = ("p50", "p95", "p99")  # quantiles drawn over time
#: Rollout states (a decision's ``to_state``) as the report names them; ``running:<step>``
#: is "in progress". Promoted, rolled back and aborted are final; a halted or paused
#: rollout waits for a human.
OUTCOMES = {
    "promoted": "promoted",
    "rolled_back": "rolled back",
    "aborted": "aborted",
    "halted": "halted",
    "paused": "paused",
}
FINAL_STATES = frozenset({"promoted", "rolled_back", "aborted"})


def parse_ts(value: Any) -> float:
    """Epoch seconds of an RFC 3339 timestamp (``...Z``); 0.0 when missing or malformed."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class GatePoint:
    """One gate at one evaluation."""

    t: float  # seconds since the rollout started
    step: int | None
    verdict: str
    estimate: float | None
    lower: float | None  # None: unbounded below
    upper: float | None  # None: unbounded above
    champion: float | None
    challenger: float | None
    tolerance: float | None  # difference beyond which the challenger is worse than the margin
    samples_challenger: int | None
    samples_champion: int | None
    samples_needed: int | None


@dataclass(frozen=True)
class GateSpec:
    """What the policy says about a gate (label, metric, direction, margin)."""

    label: str
    metric: str
    direction: str  # higher_is_better | lower_is_better
    margin: float
    margin_type: str  # absolute | relative
    min_margin: float
    critical: bool

    @property
    def kind(self) -> str:
        if self.metric in ("input_drift", "prediction_drift"):
            return "drift"
        if self.metric.startswith("latency_p"):
            return "quantile"
        return "mean"

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher_is_better"


def gate_specs(policy: Mapping[str, Any] | None) -> dict[str, GateSpec]:
    """The policy's gates by label (``name`` or else ``metric``)."""
    out: dict[str, GateSpec] = {}
    for raw in (policy or {}).get("gates") or []:
        metric = str(raw.get("metric", ""))
        label = str(raw.get("name") or metric)
        out[label] = GateSpec(
            label=label,
            metric=metric,
            direction=str(raw.get("direction", "lower_is_better")),
            margin=float(raw.get("margin") or 0.0),
            margin_type=str(raw.get("margin_type", "absolute")),
            min_margin=float(raw.get("min_margin") or 0.0),
            critical=bool(raw.get("critical", True)),
        )
    return out


def tolerance(spec: GateSpec | None, gate: Mapping[str, Any]) -> float | None:
    """The difference (challenger - champion) at the edge of the gate's margin."""
    details = gate.get("details") or {}
    champion = number(gate.get("champion"))
    tolerated = number(details.get("tolerated"))
    if tolerated is not None and champion is not None:  # quantile gates say it themselves
        return tolerated - champion
    if spec is None:
        return None
    if spec.kind == "drift":
        return spec.margin  # estimate is the drifted share; above the margin fails
    sign = -1.0 if spec.higher_is_better else 1.0
    if spec.margin_type == "absolute":
        return sign * spec.margin
    if champion is None:
        return None
    room = abs(champion) * spec.margin
    if spec.kind == "quantile":
        room = max(room, spec.min_margin)
    return sign * room


def _int(value: Any) -> int | None:
    x = number(value)
    return None if x is None else int(x)


def _interval(gate: Mapping[str, Any]) -> tuple[float | None, float | None]:
    raw = gate.get("interval")
    if not isinstance(raw, Sequence) or len(raw) != 2:
        return None, None
    return number(raw[0]), number(raw[1])


@dataclass(frozen=True)
class Rollout:
    """A rollout's recorded decisions, oldest first, and what can be read from them."""

    model: str
    rollout_id: str
    decisions: tuple[Mapping[str, Any], ...]
    run_ids: tuple[str, ...] = ()
    attachments: Mapping[str, str] = field(default_factory=dict)  # e.g. drift.html -> HTML

    @classmethod
    def from_decisions(
        cls,
        decisions: Iterable[Mapping[str, Any]],
        run_ids: Iterable[str] = (),
        attachments: Mapping[str, str] | None = None,
    ) -> Rollout:
        """Sort by timestamp (the order they were made in); run ids follow their decision."""
        items = list(decisions)
        ids = list(run_ids) or [""] * len(items)
        if len(ids) != len(items):
            raise ValueError(f"{len(items)} decisions but {len(ids)} run ids")
        pairs = list(zip(items, ids, strict=True))
        if not pairs:
            raise ValueError("a rollout report needs at least one decision")
        pairs.sort(key=lambda pair: parse_ts(pair[0].get("ts")))
        first = pairs[-1][0]
        return cls(
            model=str(first.get("model", "")),
            rollout_id=str(first.get("rollout_id", "")),
            decisions=tuple(d for d, _ in pairs),
            run_ids=tuple(r for _, r in pairs if r),
            attachments=dict(attachments or {}),
        )

    # -- the decision ---------------------------------------------------------------
    @property
    def start_ts(self) -> float:
        """When the rollout started: the first decision's time less how long its first
        step had run (the first decision comes one judge interval after the start)."""
        first = self.decisions[0]
        ts = parse_ts(first.get("ts"))
        step = (first.get("evidence") or {}).get("step") or {}
        elapsed = number(step.get("elapsed_s"))
        if step.get("index") == 0 and elapsed is not None:
            return ts - elapsed
        return ts

    @property
    def end_ts(self) -> float:
        return parse_ts(self.decisions[-1].get("ts"))

    @property
    def duration_s(self) -> float:
        return max(self.end_ts - self.start_ts, 0.0)

    @property
    def final(self) -> Mapping[str, Any]:
        """The decision that ended the rollout, else the latest one. (Holds recorded
        after the end, judged before the judge saw it, are skipped.)"""
        for decision in reversed(self.decisions):
            if decision.get("to_state") in FINAL_STATES:
                return decision
            if decision.get("action") != "hold":
                break
        return self.decisions[-1]

    @property
    def finished(self) -> bool:
        return self.final.get("to_state") in FINAL_STATES

    @property
    def outcome(self) -> str:
        """promoted, rolled back, aborted; halted or paused; else in progress."""
        return OUTCOMES.get(str(self.final.get("to_state", "")), "in progress")

    @property
    def evidence(self) -> Mapping[str, Any]:
        """The evidence of the final decision, or of the latest decision that had any
        (an operator's abort carries none)."""
        if self.final.get("evidence"):
            return self.final["evidence"]
        for decision in reversed(self.decisions):
            if decision.get("evidence"):
                return decision["evidence"]
        return {}

    def latest_with(self, key: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
        """(decision, its evidence[key]) of the latest decision whose evidence has ``key``
        (e.g. ``shadow``: recorded only while a shadow step ran)."""
        for decision in reversed(self.decisions):
            value = (decision.get("evidence") or {}).get(key)
            if value:
                return decision, value
        return None

    @property
    def policy(self) -> Mapping[str, Any]:
        return self.evidence.get("policy") or {}

    @property
    def champion_version(self) -> str:
        return str(self.evidence.get("champion_version") or "?")

    @property
    def challenger_version(self) -> str:
        return str(self.evidence.get("challenger_version") or "?")

    def t(self, decision: Mapping[str, Any]) -> float:
        """Seconds since the rollout started."""
        return parse_ts(decision.get("ts")) - self.start_ts

    def judged(self) -> list[Mapping[str, Any]]:
        """Decisions that carry gate evidence (the judge's, not an operator's)."""
        return [d for d in self.decisions if (d.get("evidence") or {}).get("gates")]

    # -- series -----------------------------------------------------------------------
    def gate_labels(self) -> list[str]:
        labels: list[str] = []
        for decision in self.judged():
            for gate in decision["evidence"]["gates"]:
                label = str(gate.get("gate"))
                if label not in labels:
                    labels.append(label)
        return labels

    def final_gates(self) -> dict[str, Mapping[str, Any]]:
        """Each gate as the final (or latest) judged decision saw it."""
        return {str(g.get("gate")): g for g in self.evidence.get("gates") or []}

    def gate_series(self) -> dict[str, list[GatePoint]]:
        """Per gate label, its point at every judged decision."""
        specs = gate_specs(self.policy)
        out: dict[str, list[GatePoint]] = {label: [] for label in self.gate_labels()}
        for decision in self.judged():
            evidence = decision["evidence"]
            step = _int((evidence.get("step") or {}).get("index"))
            local = gate_specs(evidence.get("policy")) or specs
            for gate in evidence["gates"]:
                label = str(gate.get("gate"))
                lower, upper = _interval(gate)
                samples = gate.get("samples") or {}
                out[label].append(
                    GatePoint(
                        t=self.t(decision),
                        step=step,
                        verdict=str(gate.get("verdict", "")),
                        estimate=number(gate.get("estimate")),
                        lower=lower,
                        upper=upper,
                        champion=number(gate.get("champion")),
                        challenger=number(gate.get("challenger")),
                        tolerance=tolerance(local.get(label), gate),
                        samples_challenger=_int(samples.get("challenger")),
                        samples_champion=_int(samples.get("champion")),
                        samples_needed=_int(gate.get("samples_needed")),
                    )
                )
        return out

    def step_changes(self) -> list[tuple[float, int, float, str]]:
        """(t, step index, traffic fraction, mode) where each step started: its first
        judged decision's time less how long the step had run by then."""
        out: list[tuple[float, int, float, str]] = []
        seen: set[int] = set()
        for decision in self.judged():
            step = decision["evidence"].get("step") or {}
            index = _int(step.get("index"))
            if index is None or index in seen:
                continue
            seen.add(index)
            fraction = number(step.get("traffic_fraction")) or 0.0
            started = max(self.t(decision) - (number(step.get("elapsed_s")) or 0.0), 0.0)
            out.append((started, index, fraction, str(step.get("mode", ""))))
        return out

    def series(self, *path: str) -> list[tuple[float, float]]:
        """(t, value) of a numeric evidence leaf over the judged decisions, e.g.
        ``series("srm", "log_evalue")``; decisions without it are skipped."""
        out = []
        for decision in self.judged():
            value: Any = decision["evidence"]
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            x = number(value)
            if x is not None:
                out.append((self.t(decision), x))
        return out

    def error_rates(self) -> dict[str, list[tuple[float, float]]]:
        """Per arm, (t, errors / predictions so far) from the evidence's sample counts."""
        out: dict[str, list[tuple[float, float]]] = {"champion": [], "challenger": []}
        for decision in self.judged():
            samples = decision["evidence"].get("samples") or {}
            for arm, points in out.items():
                n = number((samples.get("predictions") or {}).get(arm))
                errors = number((samples.get("errors") or {}).get(arm))
                if n and errors is not None:
                    points.append((self.t(decision), errors / n))
        return out

    def latency_quantiles(self) -> dict[str, list[tuple[float, float]]]:
        """``"challenger p95"`` -> (t, ms) from the evidence's latency summary, when the
        evaluator recorded one (:func:`modelcanary.report.extras.report_evidence`)."""
        out: dict[str, list[tuple[float, float]]] = {}
        for decision in self.judged():
            latency = decision["evidence"].get("latency") or {}
            for arm in ("champion", "challenger"):
                for name, value in (latency.get(arm) or {}).items():
                    x = number(value)
                    if name in LATENCY_LINES and x is not None:
                        out.setdefault(f"{arm} {name}", []).append((self.t(decision), x))
        return out

    def evidence_summary(self) -> dict[str, Any]:
        """The numbers behind "on how much evidence"."""
        evidence = self.evidence
        samples = evidence.get("samples") or {}
        predictions = samples.get("predictions") or {}
        return {
            "challenger_predictions": _int(predictions.get("challenger")) or 0,
            "champion_predictions": _int(predictions.get("champion")) or 0,
            "requests_joined": _int(samples.get("requests_joined")) or 0,
            "requests_without_outcome": _int(samples.get("requests_without_outcome")) or 0,
            "steps_seen": len(samples.get("steps_seen") or []),
            "steps_total": len(self.policy.get("steps") or []),
            "evaluations": len(self.decisions),
            "duration_s": self.duration_s,
            "alpha": number((evidence.get("alpha") or {}).get("total")),
        }


def format_duration(seconds: float) -> str:
    """``2 min 18 s``, ``45 s``, ``1 h 02 min``."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def utc_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
