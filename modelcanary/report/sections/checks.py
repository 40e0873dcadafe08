"""Sections about whether the comparison is sound and the service safe: drift, the
sample-ratio check, and the challenger's SLO error budgets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Any

from modelcanary.report import charts
from modelcanary.report.format import chip, legend, num, pct, table
from modelcanary.report.sections.common import section
from modelcanary.report.timeline import Rollout


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


BURN_CLASS = {
    "burning": "v-fail",
    "watch": "v-inconclusive",
    "ok": "v-pass",
    "no_data": "v-no_data",
    "error": "v-fail",
}


def _times(x: Any) -> str:
    return f"{num(x, 3)}x"


def _slo_rows(result: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for slo in result.get("objectives") or []:
        name = escape(str(slo.get("slo", "")))
        if slo.get("threshold_ms") is not None:
            name += f" (within {num(slo.get('threshold_ms'))} ms)"
        for w in slo.get("windows") or [{}]:
            chal, champ = w.get("challenger") or {}, w.get("champion") or {}
            long, short = chal.get("long") or {}, chal.get("short") or {}
            verdict = str(w.get("verdict", slo.get("verdict", "")))
            cells = [
                pct(slo.get("objective"), 2),
                f"{num(w.get('long_s'))} s / {num(w.get('short_s'))} s",
                f"{pct(long.get('good_share'), 2)} of {num(long.get('calls'))} / "
                f"{pct(short.get('good_share'), 2)} of {num(short.get('calls'))}",
                f"{_times(w.get('burn_rate'))} / {_times(w.get('short_burn_rate'))}",
                _times(w.get("burn_rate_lower")),
                _times(w.get("max_multiple")),
                _times((champ.get("long") or {}).get("burn_rate")),
            ]
            chip_html = chip(verdict.replace("_", " "), BURN_CLASS.get(verdict, "v-no_data"))
            rows.append([name, chip_html, *(escape(c) for c in cells)])
    return rows


def slos(rollout: Rollout) -> str:
    """One row per SLO and window pair; no section when the policy has no ``slos``."""
    result = rollout.evidence.get("slos")
    if not result:
        return ""
    burning = [s for s in result.get("objectives") or [] if s.get("verdict") == "burning"]
    lead = (
        chip("error budget burning", "v-fail")
        + " "
        + escape("; ".join(s["reason"] for s in burning))
        if burning
        else chip("no budget burning faster than its limit", "v-pass")
    )
    headers = [
        "SLO", "verdict", "objective", "long / short window", "challenger good share",
        "burn rate long / short", "at least (long)", "limit", "champion burn (long)",
    ]  # fmt: skip
    body = (
        f"<p>{lead}</p>"
        + table(headers, _slo_rows(result), raw=True)
        + f"<p>Each long-window test ran at alpha = {escape(num(result.get('test_alpha')))} "
        f"(log e-value threshold {escape(num(result.get('threshold_log_evalue')))}): the "
        f"gate's share {escape(num(result.get('alpha')))} spread over the "
        f"{escape(num(result.get('positions_planned')))} window positions of the planned "
        "rollout and the objectives' window pairs.</p>"
    )
    return section(
        "slos",
        "Error budgets",
        body,
        "How fast the challenger spends each SLO's error budget (1 - objective): the burn "
        "rate is the bad share of its calls in a window divided by the budget. The rollout "
        "halts when the long window's burn rate is shown above the limit with confidence "
        "(anytime-valid) and the short window's is above it too; the champion's is shown "
        "for context.",
    )


def _stratum(key: str) -> str:
    """The judge's stratum key (``step 0 canary 0.05/units``) with steps counted from 1,
    as everywhere else in the report."""
    match = re.match(r"step (\d+) (.*)", key)
    if not match:
        return key
    rest = match.group(2).replace("/", ", counted by ")
    return f"step {int(match.group(1)) + 1}: {rest}"
