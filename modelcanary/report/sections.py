"""The report's sections, each a function of the rollout returning an HTML fragment.

The order follows the questions a reader asks: what was decided and why (the header,
in :mod:`.html`), the gates, latency, errors, KPIs, drift, the sample-ratio check,
shadow agreement, the policy in force, and the timeline of steps and decisions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Any

from modelcanary.report import charts
from modelcanary.report.format import DASH, chip, interval, legend, num, pct, signed, table
from modelcanary.report.svg import fmt_clock
from modelcanary.report.timeline import GatePoint, Rollout, format_duration, gate_specs, utc_text

VERDICT_CLASS = {
    "pass": "v-pass",
    "fail": "v-fail",
    "inconclusive": "v-inconclusive",
    "no_data": "v-no_data",
    "error": "v-fail",
    "not_applicable": "v-no_data",
}
GATE_LEGEND = [
    ("band", "anytime-valid interval"),
    ("estimate", "estimate"),
    ("tolerance", "margin: beyond this line the challenger is worse than allowed"),
    ("fail-region", "worse than the margin"),
]


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    lead = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{lead}{body}</section>'


def _verdict(gate: Mapping[str, Any]) -> str:
    verdict = str(gate.get("verdict", ""))
    text = charts.VERDICT_TEXT.get(verdict, verdict)
    return chip(text, VERDICT_CLASS.get(verdict, "v-no_data"))


def _samples_text(gate: Mapping[str, Any]) -> str:
    samples = gate.get("samples") or {}
    return f"{num(samples.get('challenger'))} / {num(samples.get('champion'))}"


def _needed_text(gate: Mapping[str, Any]) -> str:
    verdict = gate.get("verdict")
    if verdict in ("pass", "fail"):
        return "decided"
    needed = gate.get("samples_needed")
    if verdict == "inconclusive":
        return f"~{num(needed)} more" if needed else "no verdict in sight yet"
    return DASH


def gates_overview(rollout: Rollout) -> str:
    gates = rollout.final_gates()
    if not gates:
        return section("gates", "Gates", "<p>No gate was evaluated in this rollout.</p>")
    rows = []
    for gate in gates.values():
        lower, upper = (gate.get("interval") or [None, None])[:2]
        rows.append(
            [
                f'<a href="#gate-{escape(_slug(str(gate.get("gate"))))}">'
                f"{escape(str(gate.get('gate')))}</a>"
                + (' <span class="critical">critical</span>' if gate.get("critical") else ""),
                _verdict(gate),
                escape(num(gate.get("champion"))),
                escape(num(gate.get("challenger"))),
                escape(f"{signed(gate.get('estimate'))} {interval(lower, upper)}")
                if gate.get("interval") is not None
                else escape(signed(gate.get("estimate"))),
                escape(str(gate.get("margin", ""))),
                escape(_samples_text(gate)),
                escape(_needed_text(gate)),
            ]
        )
    body = table(
        [
            "gate",
            "verdict",
            "champion",
            "challenger",
            "difference [anytime-valid interval]",
            "margin",
            "samples challenger / champion",
            "samples needed",
        ],
        rows,
        raw=True,
    )
    intro = (
        "Each gate compares the challenger with the champion on one metric. A gate "
        "<b>passes</b> once the interval shows the challenger within the margin, "
        "<b>fails</b> once it shows it worse than the margin, and stays "
        "<b>inconclusive</b> until then. The intervals are anytime-valid: they hold "
        "however often the judge looks, so watching the rollout does not raise the "
        "false-alarm rate."
    )
    return section("gates", "Gates at the decision", body, intro)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _progress(gate: Mapping[str, Any], points: list[GatePoint]) -> str:
    samples = (gate.get("samples") or {}).get("challenger") or 0
    needed = gate.get("samples_needed")
    verdict = gate.get("verdict")
    if verdict in ("pass", "fail"):
        first = next((p for p in points if p.verdict == verdict), None)
        verb = "passed" if verdict == "pass" else "failed"
        when = f" (first {verb} at {fmt_clock(first.t)})" if first else ""
        return f'<p class="progress-text">Decided on {num(samples)} challenger samples{when}.</p>'
    if verdict == "inconclusive" and needed:
        share = samples / (samples + needed) if samples + needed else 0.0
        return (
            f'<div class="progress"><div style="width:{share:.0%}"></div></div>'
            f'<p class="progress-text">{num(samples)} challenger samples so far; the current '
            f"estimate needs about {num(needed)} more ({share:.0%} of the way).</p>"
        )
    if verdict == "inconclusive":
        return (
            f'<p class="progress-text">{num(samples)} challenger samples so far; at the '
            "current estimate no verdict is in sight (the difference sits near the margin)."
            "</p>"
        )
    return ""


def gate_details(rollout: Rollout) -> str:
    series = rollout.gate_series()
    specs = gate_specs(rollout.policy)
    final = rollout.final_gates()
    cards = []
    for label, points in series.items():
        gate = final.get(label) or {}
        chart = charts.gate_chart(rollout, label, points, specs.get(label))
        facts = [
            ("champion", num(gate.get("champion"))),
            ("challenger", num(gate.get("challenger"))),
            ("difference", signed(gate.get("estimate"))),
            ("interval", interval(*(gate.get("interval") or [None, None])[:2]))
            if gate.get("interval") is not None
            else ("interval", DASH),
            ("margin", str(gate.get("margin", "")) or DASH),
            ("alpha", num(gate.get("alpha"))),
        ]
        dl = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
        cards.append(
            f'<article class="gate" id="gate-{escape(_slug(label))}">'
            f"<h3>{escape(label)} {_verdict(gate)}"
            + (' <span class="critical">critical</span>' if gate.get("critical") else "")
            + "</h3>"
            f'<p class="reason">{escape(str(gate.get("reason", "")))}</p>'
            f'<dl class="facts">{dl}</dl>'
            f"{_progress(gate, points)}"
            + (chart + legend(GATE_LEGEND) if chart else "<p>No estimate yet.</p>")
            + f'<p class="method">Method: {escape(str(gate.get("method", "")))}.</p></article>'
        )
    if not cards:
        return ""
    return section(
        "gate-details",
        "Each gate over time",
        "".join(cards),
        "The estimate is challenger minus champion in the metric's units; the shaded "
        "band is its anytime-valid interval at each evaluation (cut at the chart's edge "
        "where it is wider, or unbounded early on). Dots are coloured by the verdict of "
        "that evaluation.",
    )


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


def kpis(rollout: Rollout) -> str:
    specs = gate_specs(rollout.policy)
    gates = [
        g
        for label, g in rollout.final_gates().items()
        if (specs[label].metric if label in specs else str(g.get("metric", ""))).startswith("kpi.")
    ]
    if not gates:
        return section(
            "kpis",
            "Business KPIs",
            "<p>This policy has no KPI gate, so no business KPI was compared. Add a gate "
            "such as <code>metric: kpi.converted</code> to compare outcomes' KPIs.</p>",
        )
    rows = [
        [
            str(g.get("gate")),
            _verdict(g),
            escape(num(g.get("champion"))),
            escape(num(g.get("challenger"))),
            escape(f"{signed(g.get('estimate'))} {interval(*(g.get('interval') or [None, None]))}"),
            escape(str(g.get("margin", ""))),
            escape(_samples_text(g)),
        ]
        for g in gates
    ]
    body = table(
        ["KPI", "verdict", "champion mean", "challenger mean", "difference [interval]", "margin",
         "requests challenger / champion"],
        rows,
        raw=True,
    )  # fmt: skip
    return section(
        "kpis",
        "Business KPIs",
        body,
        "KPIs are credited to the arm that answered the user, so they are judged in "
        "canary steps only.",
    )


def _drift_block(title: str, report: Mapping[str, Any] | None, chart_id: str) -> str:
    if not report:
        return f"<h3>{escape(title)}</h3><p>Not computed (too few rows yet, or not applicable).</p>"
    columns = report.get("columns") or {}
    drifted = [name for name, c in columns.items() if c.get("drifted")]
    methods = sorted({str(c.get("method")) for c in columns.values()})
    rows = report.get("rows") or {}
    summary = (
        f"<p><b>{len(drifted)} of {len(columns)}</b> column{'s' if len(columns) != 1 else ''} "
        f"drifted ({pct(report.get('drifted_share'), 0)})"
        + (f": {escape(', '.join(drifted))}" if drifted else "")
        + f". Compared {num(rows.get('challenger'))} challenger rows with "
        f"{num(rows.get('champion'))} champion rows ({escape(', '.join(methods))}).</p>"
    )
    bars = charts.drift_bars(chart_id, columns, f"drift score ({', '.join(methods)})")
    key = legend([("bar", "drift score"), ("bar flagged", "drifted"), ("threshold", "threshold")])
    return f"<h3>{escape(title)}</h3>{summary}" + (bars + key if bars else "")


def drift(rollout: Rollout) -> str:
    report = rollout.evidence.get("drift") or {}
    parts = [
        _drift_block(
            "Inputs: challenger's cohort vs champion's", report.get("input_drift"), "drift-inputs"
        ),
        _drift_block(
            "Predictions: challenger's outputs vs champion's",
            report.get("prediction_drift"),
            "drift-predictions",
        ),
    ]
    share = charts.drift_share_chart(rollout)
    if share:
        parts.append(
            "<h3>Share of drifted columns over time</h3>"
            + share
            + legend([("arm-challenger", "inputs"), ("arm-champion q-p99", "predictions")])
        )
    for name, html in rollout.attachments.items():
        parts.append(
            f"<h3>Evidently report ({escape(name)})</h3>"
            "<p>Evidently's own view of the same samples, taken at the decision. The judge "
            "recomputes drift only when the samples have grown by half, so its scores above "
            "may come from slightly fewer rows.</p>"
            f'<iframe class="evidently" title="Evidently {escape(name)}" '
            f'sandbox="allow-scripts" srcdoc="{escape(html, quote=True)}"></iframe>'
        )
    return section(
        "drift",
        "Drift",
        "".join(parts),
        "Distribution drift between the arms, computed by Evidently on bounded uniform "
        "samples. In canary mode the arms serve different users, so input drift means "
        "the cohorts differ; prediction drift means the challenger answers differently. "
        "Drift is reported, and judged only where the policy has a drift gate "
        "(fixed-sample tests: heuristics outside the error budget).",
    )


def srm(rollout: Rollout) -> str:
    result = rollout.evidence.get("srm")
    if not result:
        return section("srm", "Sample-ratio check", "<p>The sample-ratio check was off.</p>")
    detected = bool(result.get("detected"))
    verdict = (
        chip("mismatch: arms not comparable", "v-fail")
        if detected
        else chip("no mismatch", "v-pass")
    )
    rows = [
        [
            _stratum(str(s.get("key", ""))),
            pct(s.get("configured_fraction"), 1),
            pct(s.get("observed_fraction"), 2),
            f"{num(s.get('challenger'))} of {num(s.get('total'))}",
            num(s.get("log_evalue")),
        ]
        for s in result.get("strata") or []
    ]
    body = (
        f"<p>{verdict} Log e-value {num(result.get('log_evalue'))}; a mismatch is declared at "
        f"{num(result.get('threshold_log_evalue'))} (log of 1/alpha, alpha = "
        f"{num(result.get('alpha'))}).</p>"
        + table(["stratum", "configured", "observed", "challenger units", "log e-value"], rows)
    )
    chart = charts.srm_chart(rollout)
    if chart:
        body += chart + legend([("estimate", "log e-value"), ("tolerance", "threshold")])
    return section(
        "srm",
        "Sample-ratio check",
        body,
        "Does the challenger get the share of users the policy sends it? If not, a routing "
        "or cohort bug makes the arms incomparable and the judge halts the rollout.",
    )


def _stratum(key: str) -> str:
    """The judge's stratum key (``step 0 canary 0.05/units``) with steps counted from 1,
    as everywhere else in the report."""
    match = re.match(r"step (\d+) (.*)", key)
    if not match:
        return key
    rest = match.group(2).replace("/", ", counted by ")
    return f"step {int(match.group(1)) + 1}: {rest}"


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


def policy(rollout: Rollout) -> str:
    raw = rollout.policy
    if not raw:
        return section("policy", "Policy in force", "<p>No policy was recorded.</p>")
    step_rows = [
        [str(i + 1), pct(s.get("traffic_fraction"), 0), str(s.get("mode", "")),
         num(s.get("min_samples")), format_duration(float(s.get("min_duration_s") or 0)),
         format_duration(float(s.get("max_duration_s") or 0))]
        for i, s in enumerate(raw.get("steps") or [])
    ]  # fmt: skip
    shares = (rollout.evidence.get("alpha") or {}).get("per_gate") or {}
    gate_rows = []
    for spec in gate_specs(raw).values():
        margin = f"{spec.margin:g} {spec.margin_type}"
        if spec.min_margin:
            margin += f", at least {spec.min_margin:g}"
        gate_rows.append(
            [
                spec.label,
                spec.metric,
                spec.direction.replace("_", " "),
                margin,
                "yes" if spec.critical else "no",
                num(shares.get(spec.label)),
            ]
        )
    settings = [
        ("error budget alpha", num(raw.get("alpha"))),
        ("sample-ratio check alpha", num((rollout.evidence.get("alpha") or {}).get("srm"))),
        ("when a step times out", str(raw.get("on_timeout", ""))),
        ("minimum samples per arm before judging", num(raw.get("min_samples_per_arm"))),
        ("design samples (where intervals are tightest)", num(raw.get("design_samples"))),
    ]
    drift_cfg = raw.get("drift") or {}
    if drift_cfg:
        settings.append(
            (
                "drift",
                f"{drift_cfg.get('num_method')}/{drift_cfg.get('cat_method')}, threshold "
                f"{drift_cfg.get('threshold')}, {drift_cfg.get('sample_size')} rows per arm",
            )
        )
    body = (
        "<h3>Steps</h3>"
        + table(
            [
                "step",
                "traffic",
                "mode",
                "min. challenger samples",
                "min. duration",
                "max. duration",
            ],
            step_rows,
        )
        + "<h3>Gates</h3>"
        + table(["gate", "metric", "direction", "margin", "critical", "alpha share"], gate_rows)
        + "<h3>Settings</h3>"
        + table(["setting", "value"], [list(s) for s in settings])
    )
    return section("policy", "Policy in force", body)


def timeline(rollout: Rollout) -> str:
    def row(d: Mapping[str, Any]) -> list[str]:
        return [
            escape(utc_text(rollout.start_ts + rollout.t(d))[11:19]),
            escape(fmt_clock(rollout.t(d))),
            chip(str(d.get("action", "")), charts.ACTION_CLASS.get(str(d.get("action")), "")),
            escape(f"{d.get('from_state')} → {d.get('to_state')}"),
            escape(pct(d.get("traffic_fraction"), 0)),
            escape(str(d.get("reason", ""))),
        ]

    headers = ["time (UTC)", "elapsed (m:ss)", "decision", "state", "traffic", "reason"]
    moves = [d for d in rollout.decisions if d.get("action") != "hold"]
    body = charts.traffic_chart(rollout) + legend(
        [("a-hold", "hold"), ("a-advance", "advance"), ("a-promote", "promote"),
         ("a-rollback", "roll back / abort"), ("a-halt", "halt")]
    )  # fmt: skip
    body += (
        table(headers, [row(d) for d in moves], raw=True)
        if moves
        else "<p>Only holds so far: the rollout has not moved.</p>"
    )
    body += (
        f"<details><summary>All {len(rollout.decisions)} evaluations, holds included"
        f"</summary>{table(headers, [row(d) for d in rollout.decisions], raw=True)}</details>"
    )
    return section(
        "timeline",
        "Timeline of steps and decisions",
        body,
        "The challenger's share of traffic over time; each dot is one evaluation by the "
        "judge (hover for its reason).",
    )
