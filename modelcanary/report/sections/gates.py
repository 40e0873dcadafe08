"""Sections about the gates: the table at the decision, each gate over time, KPIs."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from modelcanary.report import charts
from modelcanary.report.format import DASH, interval, legend, num, signed, slug, table
from modelcanary.report.sections.common import GATE_LEGEND, section, verdict_chip
from modelcanary.report.svg import fmt_clock
from modelcanary.report.timeline import GatePoint, Rollout, gate_specs


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
                f'<a href="#gate-{escape(slug(str(gate.get("gate"))))}">'
                f"{escape(str(gate.get('gate')))}</a>"
                + (' <span class="critical">critical</span>' if gate.get("critical") else ""),
                verdict_chip(gate),
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
            f'<article class="gate" id="gate-{escape(slug(label))}">'
            f"<h3>{escape(label)} {verdict_chip(gate)}"
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
            verdict_chip(g),
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
