"""The report's charts, each drawn from a :class:`~modelcanary.report.timeline.Rollout`.

Every function returns an SVG string, or None when the evidence has nothing to draw.
Time runs from the rollout's start; a dashed vertical line marks
where each step was first judged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from modelcanary.report.format import slug
from modelcanary.report.svg import Chart, hbar_chart, padded
from modelcanary.report.timeline import GatePoint, GateSpec, Rollout, gate_specs

VERDICT_TEXT = {
    "pass": "pass",
    "fail": "fail",
    "inconclusive": "inconclusive",
    "no_data": "no data",
    "error": "error",
    "not_applicable": "not applicable",
}
ACTION_CLASS = {
    "promote": "a-promote",
    "advance": "a-advance",
    "rollback": "a-rollback",
    "halt": "a-halt",
    "abort": "a-rollback",
    "hold": "a-hold",
}


def _x_range(rollout: Rollout) -> tuple[float, float]:
    """From the rollout's start to a little after the last decision (so its dot shows)."""
    return 0.0, max(rollout.duration_s * 1.03, 1.0)


def _mark_steps(chart: Chart, rollout: Rollout) -> None:
    for t, index, fraction, mode in rollout.step_changes():
        chart.vline(t, "step", f"step {index + 1}: {fraction:.0%} {mode}")


def gate_chart(
    rollout: Rollout, label: str, points: Sequence[GatePoint], spec: GateSpec | None
) -> str | None:
    """The gate's estimate (challenger - champion) with its anytime-valid interval over
    time, the tolerance line and the fail side shaded; dots coloured by verdict."""
    if not any(p.estimate is not None for p in points):
        return None
    drift = spec is not None and spec.kind == "drift"
    half = points[len(points) // 2 :]
    values = [p.estimate for p in points if p.estimate is not None]
    values += [p.tolerance for p in points if p.tolerance is not None]
    values += [b for p in half for b in (p.lower, p.upper) if b is not None]
    values.append(0.0)
    lo, hi = padded(values, 0.15)
    if drift:
        lo, hi = 0.0, 1.0  # a share of columns
    unit = " (ms)" if label.startswith("latency") or (spec and spec.kind == "quantile") else ""
    chart = Chart(
        f"gate-{slug(label)}",
        _x_range(rollout),
        (lo, hi),
        y_label="share of columns drifted" if drift else f"challenger \u2212 champion{unit}",
    )
    tolerated = [(p.t, p.tolerance) for p in points if p.tolerance is not None]
    if tolerated:
        xs = [t for t, _ in tolerated] + [chart.x1]
        edge = [v for _, v in tolerated] + [tolerated[-1][1]]
        # an unknown gate: the sign of its margin says which side is worse
        worse_up = tolerated[-1][1] > 0 if spec is None else drift or not spec.higher_is_better
        if worse_up:
            chart.band(xs, edge, [None] * len(xs), "fail-region")
        else:
            chart.band(xs, [None] * len(xs), edge, "fail-region")
        chart.line([*tolerated, (chart.x1, tolerated[-1][1])], "tolerance")
    if not drift:
        chart.hline(0.0, "zero", "no difference")
    bounded = [p for p in points if p.estimate is not None]
    if not drift:
        chart.band(
            [p.t for p in bounded], [p.lower for p in bounded], [p.upper for p in bounded], "band"
        )
    chart.line([(p.t, p.estimate) for p in bounded], "estimate")  # type: ignore[misc]
    chart.dots(
        [
            (
                p.t,
                p.estimate,  # type: ignore[misc]
                f"v-{p.verdict}",
                f"{VERDICT_TEXT.get(p.verdict, p.verdict)} at {p.t:.0f} s: "
                f"difference {p.estimate:.4g}"
                + ("" if drift else f" in [{_b(p.lower)}, {_b(p.upper)}]")
                + f", {p.samples_challenger or 0} challenger samples",
            )
            for p in bounded
        ]
    )
    _mark_steps(chart, rollout)
    return chart.render(f"{label}: estimate and anytime-valid interval over time")


def _b(x: float | None) -> str:
    return "unbounded" if x is None else f"{x:.4g}"


def arms_chart(
    chart_id: str,
    rollout: Rollout,
    lines: dict[str, list[tuple[float, float]]],
    y_label: str,
    extra: dict[str, list[tuple[float, float]]] | None = None,
    floor_zero: bool = True,
    y_format: Callable[[float], str] | None = None,
) -> str | None:
    """Lines per series, classed by their name's arm (``champion ...``/``challenger ...``)
    and quantile (``... p99`` dashed); ``extra`` lines are drawn as tolerances."""
    drawn = {k: v for k, v in lines.items() if v}
    if not drawn:
        return None
    values = [y for pts in drawn.values() for _, y in pts]
    values += [y for pts in (extra or {}).values() for _, y in pts]
    lo, hi = padded(values + ([0.0] if floor_zero else []), 0.1)
    if max(map(abs, values)) == 0:
        lo, hi = 0.0, 0.01  # all zero: a flat line at the bottom of a small scale
    chart = Chart(chart_id, _x_range(rollout), (max(lo, 0.0) if floor_zero else lo, hi))
    chart.y_label = y_label
    if y_format is not None:
        chart.y_format = y_format
    for _name, pts in (extra or {}).items():
        if pts:
            chart.line([*pts, (chart.x1, pts[-1][1])], "tolerance")
    for name, pts in drawn.items():
        arm = "challenger" if name.startswith("challenger") else "champion"
        quantile = name.split()[-1] if " " in name else ""
        chart.line(pts, f"arm-{arm} q-{quantile}", title=name)
    _mark_steps(chart, rollout)
    return chart.render(y_label)


def latency_chart(rollout: Rollout) -> str | None:
    """p50/p95/p99 per arm over time from the evidence's latency summary, else the latency
    gates' champion and challenger quantiles; the tolerated challenger value dashed."""
    lines = rollout.latency_quantiles()
    extra: dict[str, list[tuple[float, float]]] = {}
    specs = gate_specs(rollout.policy)
    for label, points in rollout.gate_series().items():
        metric = specs[label].metric if label in specs else label
        if not metric.startswith("latency_p"):
            continue
        q = metric.split("_")[-1]
        if not lines or f"champion {q}" not in lines:
            lines[f"champion {q}"] = [(p.t, p.champion) for p in points if p.champion is not None]
            lines[f"challenger {q}"] = [
                (p.t, p.challenger) for p in points if p.challenger is not None
            ]
        extra[f"tolerated {q}"] = [
            (p.t, p.champion + p.tolerance)
            for p in points
            if p.champion is not None and p.tolerance is not None
        ]
    return arms_chart("latency", rollout, lines, "latency (ms)", extra)


def quantile_curve_chart(curves: dict[str, list[tuple[float, float]]]) -> str | None:
    """Latency quantile function per arm: x is the quantile, y the latency."""
    drawn = {k: v for k, v in curves.items() if v}
    if not drawn:
        return None
    values = [y for pts in drawn.values() for _, y in pts]
    chart = Chart(
        "latency-distribution",
        (0.0, 1.0),
        (0.0, padded(values, 0.1)[1]),
        x_format=lambda q: f"p{q * 100:.0f}",
        x_label="quantile (share of calls at most this fast)",
        y_label="latency (ms)",
        time_axis=False,
    )
    for arm, pts in drawn.items():
        chart.line(pts, f"arm-{arm}", title=arm)
    return chart.render("latency distribution per arm")


def error_rate_chart(rollout: Rollout) -> str | None:
    return arms_chart(
        "error-rate", rollout, rollout.error_rates(), "error rate (so far)", y_format=_percent
    )


def _percent(y: float) -> str:
    return f"{y * 100:.2g}%"


def srm_chart(rollout: Rollout) -> str | None:
    """The sample-ratio test's log e-value over time against its rejection threshold."""
    values = rollout.series("srm", "log_evalue")
    threshold = rollout.series("srm", "threshold_log_evalue")
    if not values:
        return None
    ys = [y for _, y in values] + [y for _, y in threshold] + [0.0]
    chart = Chart("srm", _x_range(rollout), padded(ys, 0.1), y_label="log e-value")
    if threshold:
        chart.band(
            [t for t, _ in threshold] + [chart.x1],
            [y for _, y in threshold] + [threshold[-1][1]],
            [None] * (len(threshold) + 1),
            "fail-region",
        )
        chart.line([*threshold, (chart.x1, threshold[-1][1])], "tolerance")
    chart.line(values, "estimate", title="log e-value")
    _mark_steps(chart, rollout)
    return chart.render("sample ratio mismatch test over time")


def drift_share_chart(rollout: Rollout) -> str | None:
    lines = {
        "challenger inputs": rollout.series("drift", "input_drift", "drifted_share"),
        "challenger predictions": rollout.series("drift", "prediction_drift", "drifted_share"),
    }
    if not any(lines.values()):
        return None
    chart = Chart("drift-share", _x_range(rollout), (0.0, 1.0), y_label="share drifted")
    chart.y_format = lambda y: f"{y:.0%}"
    chart.line(lines["challenger inputs"], "arm-challenger", title="input columns drifted")
    chart.line(lines["challenger predictions"], "arm-champion q-p99", title="predictions drifted")
    _mark_steps(chart, rollout)
    return chart.render("share of drifted columns over time")


def traffic_chart(rollout: Rollout) -> str:
    """The challenger's traffic share over time with each decision as a dot."""
    points = [(rollout.t(d), float(d.get("traffic_fraction") or 0.0)) for d in rollout.decisions]
    first_step = (rollout.decisions[0].get("evidence") or {}).get("step") or {}
    if points[0][0] > 0 and isinstance(first_step.get("traffic_fraction"), int | float):
        points.insert(0, (0.0, float(first_step["traffic_fraction"])))  # from the start
    chart = Chart("traffic", _x_range(rollout), (0.0, 1.0), height=170, y_label="challenger share")
    chart.y_format = lambda y: f"{y:.0%}"
    chart.steps(points, "arm-challenger")
    chart.dots(
        [
            (
                rollout.t(d),
                float(d.get("traffic_fraction") or 0.0),
                ACTION_CLASS.get(str(d.get("action")), "a-hold"),
                f"{d.get('action')} at {rollout.t(d):.0f} s: {d.get('reason', '')}",
            )
            for d in rollout.decisions
        ],
        radius=4.0,
    )
    return chart.render("traffic share and decisions over time")


def drift_bars(chart_id: str, columns: dict[str, dict], value_label: str) -> str | None:
    """Per-column drift score against its threshold, most drifted first."""
    rows = []
    for name, col in columns.items():
        score = col.get("score")
        if isinstance(score, int | float):
            rows.append((name, float(score), col.get("threshold"), bool(col.get("drifted"))))
    if not rows:
        return None
    rows.sort(key=lambda r: (not r[3], -r[1]))
    return hbar_chart(chart_id, rows, value_label)
