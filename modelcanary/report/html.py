"""The report document: one self-contained HTML file, readable offline.

No script, font, image or stylesheet is fetched: charts are inline SVG, styles are
inline, and a Content-Security-Policy forbids every network load, so the file opens the
same from a laptop, an MLflow artifact view or an e-mail attachment. An embedded
Evidently report (if the rollout has one) runs its own inline scripts inside a
sandboxed ``<iframe srcdoc>``.
"""

from __future__ import annotations

import time
from html import escape

from modelcanary.report import sections
from modelcanary.report.format import DASH, num
from modelcanary.report.timeline import Rollout, format_duration, utc_text

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
    "script-src 'unsafe-inline' 'unsafe-eval'; frame-src 'self' about: data:"
)

HEADLINE_CLASS = {
    "promoted": "d-good",
    "rolled back": "d-bad",
    "aborted": "d-bad",
    "halted": "d-warn",
    "paused": "d-warn",
    "in progress": "d-neutral",
}

STYLE = """
:root { --ink:#1d2330; --muted:#5b6474; --line:#d9dee7; --bg:#f6f7fa; --card:#fff;
  --chal:#2563eb; --champ:#d97706; --good:#15803d; --bad:#b91c1c; --warn:#a16207; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--ink); background:var(--bg); }
main { max-width: 980px; margin: 0 auto; padding: 0 20px 48px; }
header.decision { padding: 22px 24px; margin: 20px 0 12px; border-radius: 10px;
  background: var(--card); border-left: 8px solid var(--muted); box-shadow: 0 1px 3px #0001; }
header.d-good { border-color: var(--good); } header.d-bad { border-color: var(--bad); }
header.d-warn { border-color: var(--warn); } header.d-neutral { border-color: var(--chal); }
.eyebrow { color: var(--muted); font-size: 13px; letter-spacing: .02em; }
h1 { font-size: 26px; margin: 6px 0 8px; }
h1 .outcome { text-transform: uppercase; letter-spacing: .03em; }
header.d-good .outcome { color: var(--good); } header.d-bad .outcome { color: var(--bad); }
header.d-warn .outcome { color: var(--warn); } header.d-neutral .outcome { color: var(--chal); }
p.why { font-size: 17px; margin: 4px 0 10px; }
p.evidence { color: var(--muted); margin: 0; }
nav { position: sticky; top: 0; background: var(--bg); padding: 8px 0; z-index: 1;
  border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { margin-right: 14px; color: var(--chal); text-decoration: none; }
section { background: var(--card); border-radius: 10px; padding: 16px 22px 18px;
  margin: 16px 0; box-shadow: 0 1px 3px #0001; }
h2 { font-size: 19px; margin: 2px 0 8px; } h3 { font-size: 16px; margin: 18px 0 6px; }
p.intro { color: var(--muted); margin-top: 0; font-size: 14px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 13.5px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; }
td { font-variant-numeric: tabular-nums; }
.chip { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; background: #e5e7eb; color: #374151; white-space: nowrap; }
.chip.v-pass, .chip.a-promote { background: #dcfce7; color: var(--good); }
.chip.v-fail, .chip.a-rollback { background: #fee2e2; color: var(--bad); }
.chip.v-inconclusive, .chip.a-halt { background: #fef3c7; color: var(--warn); }
.chip.a-advance { background: #dbeafe; color: var(--chal); }
.critical { font-size: 11px; color: var(--bad); border: 1px solid #fca5a5; border-radius: 4px;
  padding: 0 4px; font-weight: 600; vertical-align: middle; }
article.gate { border-top: 1px solid var(--line); padding-top: 6px; margin-top: 10px; }
article.gate:first-of-type { border-top: 0; }
p.reason { margin: 2px 0 8px; }
dl.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 4px 0 8px; }
dl.facts div { min-width: 90px; } dt { color: var(--muted); font-size: 12px; }
dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
.progress { height: 8px; background: #e5e7eb; border-radius: 4px; overflow: hidden;
  max-width: 420px; }
.progress div { height: 100%; background: var(--chal); }
p.progress-text, p.method { color: var(--muted); font-size: 13px; margin: 4px 0; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0 2px; }
svg .grid { stroke: #eef0f4; } svg .axis { stroke: #9aa3b2; }
svg .tick { fill: #6b7280; font-size: 11px; } svg .axis-label { fill: #6b7280; font-size: 11px; }
svg .ref-label, svg .step-label { fill: #6b7280; font-size: 10.5px; }
svg .step { stroke: #9aa3b2; stroke-dasharray: 3 3; }
svg .zero { stroke: #6b7280; stroke-width: 1; }
svg .band, .swatch.band { fill: #2563eb2e; background: #2563eb2e; stroke: none; }
svg .estimate { fill: none; stroke: var(--chal); stroke-width: 2; }
svg .tolerance { fill: none; stroke: var(--bad); stroke-width: 1.5; stroke-dasharray: 6 4; }
svg .fail-region, .swatch.fail-region { fill: #b91c1c14; background: #b91c1c1f; }
svg .arm-challenger { fill: none; stroke: var(--chal); stroke-width: 2; }
svg .arm-champion { fill: none; stroke: var(--champ); stroke-width: 2; }
svg .q-p99 { stroke-dasharray: 5 3; } svg .q-p50 { stroke-width: 1.2; }
svg circle.point { fill: currentColor; }
svg circle { stroke: #fff; stroke-width: 1; }
.v-pass { fill: var(--good); } .v-fail, .v-error { fill: var(--bad); }
.v-inconclusive { fill: #eab308; } .v-no_data, .v-not_applicable { fill: #9ca3af; }
.a-hold { fill: #9ca3af; } .a-advance { fill: var(--chal); } .a-promote { fill: var(--good); }
.a-rollback { fill: var(--bad); } .a-halt { fill: #eab308; }
svg .bar { fill: #93c5fd; } svg .bar.flagged { fill: #f87171; }
svg .threshold, .swatch.threshold { stroke: var(--ink); stroke-width: 2; background: var(--ink); }
.legend { font-size: 12px; color: var(--muted); display: flex; flex-wrap: wrap; gap: 4px 16px; }
.swatch { display: inline-block; width: 16px; height: 10px; margin-right: 5px;
  vertical-align: middle; border-radius: 2px; background: #9ca3af; }
.swatch.estimate, .swatch.arm-challenger, .swatch.a-advance { background: var(--chal); }
.swatch.arm-champion { background: var(--champ); }
.swatch.arm-champion.q-p99 { background: repeating-linear-gradient(90deg, var(--champ) 0 5px,
  transparent 5px 8px); }
.swatch.tolerance { background: repeating-linear-gradient(90deg, var(--bad) 0 6px,
  transparent 6px 9px); height: 3px; }
.swatch.bar { background: #93c5fd; } .swatch.bar.flagged { background: #f87171; }
.swatch.threshold { width: 3px; } .swatch.a-promote { background: var(--good); }
.swatch.a-rollback { background: var(--bad); } .swatch.a-halt { background: #eab308; }
.swatch.a-hold { background: #9ca3af; }
iframe.evidently { width: 100%; height: 900px; border: 1px solid var(--line); border-radius: 6px; }
details summary { cursor: pointer; color: var(--chal); margin: 8px 0; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 24px; }
code { background: #f1f3f7; padding: 0 4px; border-radius: 3px; }
@media print { nav { display: none; } section { box-shadow: none; break-inside: avoid; } }
"""

NAV = [
    ("gates", "Gates"),
    ("gate-details", "Over time"),
    ("latency", "Latency"),
    ("errors", "Errors"),
    ("kpis", "KPIs"),
    ("drift", "Drift"),
    ("srm", "Sample ratio"),
    ("slos", "Error budgets"),
    ("shadow", "Shadow"),
    ("policy", "Policy"),
    ("timeline", "Timeline"),
]


def headline(rollout: Rollout) -> tuple[str, str]:
    """(title, css class): what happened to the challenger, in a few words."""
    outcome = rollout.outcome
    v_new, v_old = rollout.challenger_version, rollout.champion_version
    if outcome == "in progress":
        step = rollout.evidence.get("step") or {}
        index = step.get("index")
        where = (
            f" at step {int(index) + 1} of {len(rollout.policy.get('steps') or [])} "
            f"({float(step.get('traffic_fraction') or 0):.0%} {step.get('mode', '')})"
            if isinstance(index, int)
            else ""
        )
        title = f'Version {v_new} is <span class="outcome">in progress</span>{where}'
    else:
        title = f'Version {v_new} was <span class="outcome">{escape(outcome)}</span>'
    return f"{title} <small>(champion: version {escape(v_old)})</small>", HEADLINE_CLASS.get(
        outcome, "d-neutral"
    )


def evidence_sentence(rollout: Rollout) -> str:
    """On how much evidence: samples, outcomes, time, steps, looks, error budget."""
    s = rollout.evidence_summary()
    steps = (
        f"{s['steps_seen']} of {s['steps_total']} steps"
        if s["steps_total"]
        else f"{s['steps_seen']} steps"
    )
    alpha = f" at an error budget of alpha = {num(s['alpha'])}" if s["alpha"] is not None else ""
    return (
        f"On {num(s['challenger_predictions'])} challenger and "
        f"{num(s['champion_predictions'])} champion predictions, "
        f"{num(s['requests_joined'])} requests with outcomes, over "
        f"{format_duration(s['duration_s'])} and {steps}; the judge looked "
        f"{num(s['evaluations'])} times{alpha}, with anytime-valid statistics (looking "
        "often does not raise the false-alarm rate)."
    )


def render_html(rollout: Rollout, generated_at: float | None = None) -> str:
    """The whole report as one HTML string."""
    title, cls = headline(rollout)
    final = rollout.final
    why = str(final.get("reason", ""))
    if not rollout.finished:
        why = f"Latest evaluation: {why}"
    body = [
        sections.gates_overview(rollout),
        sections.gate_details(rollout),
        sections.latency(rollout),
        sections.errors(rollout),
        sections.kpis(rollout),
        sections.drift(rollout),
        sections.srm(rollout),
        sections.slos(rollout),
        sections.shadow(rollout),
        sections.policy(rollout),
        sections.timeline(rollout),
    ]
    present = "".join(body)
    nav = "".join(
        f'<a href="#{anchor}">{escape(text)}</a>'
        for anchor, text in NAV
        if f'id="{anchor}"' in present
    )
    generated = utc_text(generated_at if generated_at is not None else time.time())
    runs = ", ".join(rollout.run_ids[-3:])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(rollout.model)} v{escape(rollout.challenger_version)}: \
{escape(rollout.outcome)} — modelcanary report</title>
<style>{STYLE}</style></head>
<body><main>
<header class="decision {cls}">
<div class="eyebrow">modelcanary evaluation report · model <b>{escape(rollout.model)}</b> ·
rollout <code>{escape(rollout.rollout_id)}</code> · {escape(utc_text(rollout.start_ts))}</div>
<h1>{title}</h1>
<p class="why">{escape(why)}</p>
<p class="evidence">{escape(evidence_sentence(rollout))}</p>
</header>
<nav>{nav}</nav>
{present}
<footer>Generated by modelcanary at {escape(generated)} from {len(rollout.decisions)} decisions
recorded in MLflow (experiment <code>modelcanary-rollouts</code>; latest runs:
{escape(runs) or DASH}). The difference of a gate is challenger minus champion; verdicts:
pass (shown within the margin), fail (shown worse than the margin), inconclusive (not shown
either way yet).</footer>
</main></body></html>
"""
