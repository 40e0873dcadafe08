"""What every section shares: the section frame, verdict chips, anchors."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from modelcanary.report import charts
from modelcanary.report.format import chip

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


def verdict_chip(gate: Mapping[str, Any]) -> str:
    verdict = str(gate.get("verdict", ""))
    text = charts.VERDICT_TEXT.get(verdict, verdict)
    return chip(text, VERDICT_CLASS.get(verdict, "v-no_data"))
