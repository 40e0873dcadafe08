"""Sections comparing the arms: latency, errors, shadow agreement and score shift."""

from __future__ import annotations

from html import escape

from modelcanary.report import charts
from modelcanary.report.format import legend, num, pct, signed, table
from modelcanary.report.sections.common import section
from modelcanary.report.svg import fmt_clock
from modelcanary.report.timeline import Rollout


def latency(rollout: Rollout) -> str:
    chart = charts.latency_chart(rollout)
    summary = rollout.evidence.get("latency") or {}
    parts = []
    if chart:
        parts.append(
            chart
            + legend(
                [
                    ("arm-champion", "champion"),
                    ("arm-challenger", "challenger"),
                    ("tolerance", "tolerated challenger value"),
                ]
            )
        )
    arms = {a: summary.get(a) for a in ("champion", "challenger") if summary.get(a)}
    if arms:
        names = [
            k for k in ("mean", "p50", "p90", "p95", "p99") if any(k in v for v in arms.values())
        ]
        rows = [
            [arm, num(stats.get("n"))] + [num(stats.get(k)) for k in names]
            for arm, stats in arms.items()
        ]
        parts.append(table(["arm", "calls", *[f"{k} (ms)" for k in names]], rows))
        curves = {
            arm: [(float(q), float(v)) for q, v in stats.get("curve") or []]
            for arm, stats in arms.items()
        }
        curve_chart = charts.quantile_curve_chart(curves)
        if curve_chart:
            parts.append(
                "<h3>Distribution at the decision</h3>"
                + curve_chart
                + legend([("arm-champion", "champion"), ("arm-challenger", "challenger")])
            )
    if not parts:
        return section("latency", "Latency", "<p>No latency was recorded.</p>")
    return section(
        "latency",
        "Latency: champion vs challenger",
        "".join(parts),
        "Response time of each arm's model calls"
        + (" (solid: p95; thin: p50; dashed: p99)." if summary else " (p95 of each arm)."),
    )


def errors(rollout: Rollout) -> str:
    samples = rollout.evidence.get("samples") or {}
    predictions = samples.get("predictions") or {}
    errs = samples.get("errors") or {}
    rows = []
    for arm in ("champion", "challenger"):
        n, e = predictions.get(arm), errs.get(arm)
        rate = e / n if isinstance(n, int | float) and n and isinstance(e, int | float) else None
        rows.append([arm, num(n), num(e), pct(rate, 2)])
    chart = charts.error_rate_chart(rollout)
    body = table(["arm", "calls", "errors", "error rate"], rows)
    if chart:
        body += chart + legend([("arm-champion", "champion"), ("arm-challenger", "challenger")])
    return section(
        "errors", "Errors", body, "Calls that raised or timed out, per arm, over the rollout."
    )


def shadow(rollout: Rollout) -> str:
    modes = {str((d["evidence"].get("step") or {}).get("mode")) for d in rollout.judged()}
    found = rollout.latest_with("shadow")
    if "shadow" not in modes and found is None:
        return ""
    if found is None:
        body = (
            "<p>This rollout ran shadow steps, but its evidence carries no agreement "
            "summary (the evaluator that judged it did not record one). The prediction "
            "drift above compares the two arms' outputs.</p>"
        )
    else:
        decision, summary = found
        step = ((decision.get("evidence") or {}).get("step") or {}).get("index")
        when = f"at {fmt_clock(rollout.t(decision))}" + (
            f", in step {step + 1}" if isinstance(step, int) else ""
        )
        score = summary.get("score") or {}
        rows = [
            [arm, num(s.get("n")), num(s.get("mean")), num(s.get("p10")), num(s.get("p50")),
             num(s.get("p90"))]
            for arm, s in ((a, score.get(a) or {}) for a in ("champion", "challenger"))
        ]  # fmt: skip
        body = (
            f"<p>As of the last shadow evaluation ({escape(when)}): the arms agree on "
            f"<b>{pct(summary.get('agreement'))}</b> of {num(summary.get('agreement_n'))} "
            f"mirrored requests with a label ({escape(str(summary.get('agreement_basis', '')))})."
            f" Mean score shift (challenger \u2212 champion): "
            f"<b>{signed(score.get('mean_shift'))}</b>.</p>"
            + table(["arm", "answers sampled", "mean score", "p10", "p50", "p90"], rows)
        )
    return section(
        "shadow",
        "Shadow: agreement and score shift",
        body,
        "In shadow steps both versions answer the same requests; only the champion's "
        "answer reaches the user.",
    )
