"""Rendering the report: the answers at the top, every section, and nothing fetched."""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from modelcanary.events import Arm, Mode
from modelcanary.judge import RolloutEvidence
from modelcanary.report import Rollout, render_html
from modelcanary.report.extras import latency_summary, report_evidence, shadow_summary
from modelcanary.report.format import interval, num, pct
from modelcanary.report.svg import Chart, hbar_chart, nice_step, ticks
from tests.simulated_rollout import BAD, GOOD, decision_dicts, report_policy, simulate


@pytest.fixture(scope="module")
def good() -> list[dict[str, Any]]:
    return decision_dicts(simulate("m", GOOD, policy=report_policy(drift=False)))


@pytest.fixture(scope="module")
def bad() -> list[dict[str, Any]]:
    return decision_dicts(simulate("m", BAD, policy=report_policy(drift=False)))


class _Tags(HTMLParser):
    """Collects tags and attributes, and checks the document nests properly."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


def test_the_top_says_what_why_and_on_how_much_evidence(good: list[dict[str, Any]]) -> None:
    rollout = Rollout.from_decisions(good)
    html = render_html(rollout)
    header = html[html.index("<header") : html.index("</header>")]
    assert "Version 2 was" in header and "promoted" in header and "version 1" in header
    assert escape(good[-1]["reason"]) in header
    summary = rollout.evidence_summary()
    assert f"On {summary['challenger_predictions']:,} challenger" in header
    assert f"looked {len(good)} times" in header and "3 of 3 steps" in header


def test_every_section_is_there(good: list[dict[str, Any]]) -> None:
    html = render_html(Rollout.from_decisions(good))
    for anchor in ("gates", "gate-details", "latency", "errors", "kpis", "drift", "srm",
                   "shadow", "policy", "timeline"):  # fmt: skip
        assert f'<section id="{anchor}">' in html, anchor
        assert f'href="#{anchor}"' in html, anchor
    for label in ("accuracy", "error_rate", "latency_p95", "kpi.converted"):
        assert f'id="gate-{label.replace(".", "-").replace("_", "-")}"' in html
    assert "agree on" in html  # the shadow step's agreement
    # 4 gates, latency over time and its distribution, errors, sample ratio, traffic
    assert html.count("<svg") == 9


def test_the_document_is_well_formed_and_fetches_nothing(good: list[dict[str, Any]]) -> None:
    html = render_html(Rollout.from_decisions(good))
    parsed = _parse(html)
    assert parsed.errors == [] and parsed.stack == []
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for _, attrs in parsed.tags:
        for name in ("src", "href", "action"):
            value = attrs.get(name) or ""
            assert not value or value.startswith("#"), (name, value)
    assert not re.search(r"url\((?!#)|@import|https?://(?!www\.w3\.org/2000/svg)", html)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_reasons_are_escaped(good: list[dict[str, Any]]) -> None:
    hostile = {**good[-1], "reason": '<script>alert("x")</script> & more'}
    html = render_html(Rollout.from_decisions([*good[:-1], hostile]))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in html


def test_an_evidently_report_is_embedded_sandboxed(good: list[dict[str, Any]]) -> None:
    page = "<html><body><script>document.body.append('drift')</script></body></html>"
    html = render_html(Rollout.from_decisions(good, attachments={"drift.html": page}))
    frames = [a for tag, a in _parse(html).tags if tag == "iframe"]
    assert len(frames) == 1
    assert frames[0]["srcdoc"] == page and frames[0]["sandbox"] == "allow-scripts"
    assert "<script>" not in html  # only inside the escaped srcdoc


def test_rolled_back_report(bad: list[dict[str, Any]]) -> None:
    html = render_html(Rollout.from_decisions(bad))
    assert 'class="decision d-bad"' in html and "rolled back" in html
    assert '<span class="chip v-fail">fail</span>' in html


def test_in_progress_report_names_the_step(good: list[dict[str, Any]]) -> None:
    html = render_html(Rollout.from_decisions(good[:1]))
    assert "in progress</span> at step 1 of 3 (50% shadow)" in html
    assert "Latest evaluation: Hold" in html
    assert "Only holds so far" in html


def test_a_decision_without_evidence_still_renders() -> None:
    abort = {
        "model": "m",
        "rollout_id": "r",
        "action": "abort",
        "from_state": "running:0",
        "to_state": "aborted",
        "traffic_fraction": 0.0,
        "reason": "Aborted by an operator.",
        "evidence": {},
        "ts": "2025-03-01T09:30:00Z",
    }
    html = render_html(Rollout.from_decisions([abort]))
    assert "aborted" in html and "No gate was evaluated" in html
    assert _parse(html).errors == []


def test_ticks_are_round_and_inside_the_range() -> None:
    assert nice_step(1.0, 5) == 0.2
    assert nice_step(0.07, 5) == pytest.approx(0.02)
    values = ticks(-0.031, 0.052, 5)
    assert values[0] >= -0.031 and values[-1] <= 0.052 and 0.0 in values
    assert all(abs(v / 0.02 - round(v / 0.02)) < 1e-9 for v in values)


def test_an_unbounded_interval_is_drawn_to_the_edge() -> None:
    chart = Chart("c", (0.0, 10.0), (-1.0, 1.0))
    chart.band([0.0, 10.0], [None, -0.5], [0.5, None], "band")
    svg = chart.render()
    points = re.search(r'<polygon class="band" points="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    ys = [float(p.split(",")[1]) for p in points.split()]
    top, bottom = chart.top, chart.top + chart.plot_height
    assert top in ys and bottom in ys  # the None sides reach the plot's edges


def test_drifted_bars_are_flagged() -> None:
    svg = hbar_chart("d", [("a", 0.3, 0.1, True), ("b", 0.05, 0.1, False)], "score")
    assert svg.count('class="bar flagged"') == 1 and svg.count('class="bar"') == 1
    assert svg.count('class="threshold"') == 2


def test_number_formatting() -> None:
    assert num(1234) == "1,234" and num(0.0123456) == "0.01235" and num(None) == "\u2013"
    assert num(float("nan")) == "\u2013" and num(123456.7) == "123,457"
    assert pct(0.05, 1) == "5.0%" and pct(None) == "\u2013"
    assert interval(None, 0.5) == "[\u2212\u221e, +0.5]"


def test_latency_summary_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    evidence = RolloutEvidence()
    latencies = {arm: rng.lognormal(np.log(5 + 3 * (arm is Arm.CHALLENGER)), 0.4, 4000)
                 for arm in Arm}  # fmt: skip
    for arm, values in latencies.items():
        evidence.add_predictions(arm, Mode.CANARY, values, step=0, traffic_fraction=0.5)
    summary = latency_summary(evidence, Mode.CANARY)
    for arm, values in latencies.items():
        stats = summary[arm.value]
        assert stats["n"] == 4000
        assert stats["mean"] == pytest.approx(values.mean())
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert stats[name] == pytest.approx(np.quantile(values, q, method="lower"), rel=0.011)
        curve = [v for _, v in stats["curve"]]
        assert curve == sorted(curve)


def test_shadow_agreement_equals_the_share_of_equal_predictions() -> None:
    rng = np.random.default_rng(5)
    labels = rng.random(3000) < 0.4
    champion = np.where(rng.random(3000) < 0.9, labels, ~labels)
    challenger = np.where(rng.random(3000) < 0.1, ~champion, champion)
    evidence = RolloutEvidence()
    evidence.add_paired("accuracy", challenger == labels, champion == labels, step=0)
    summary = shadow_summary(evidence)
    assert summary["agreement_n"] == 3000
    assert summary["agreement"] == pytest.approx(float(np.mean(challenger == champion)))
    assert "shadow" in report_evidence(evidence, Mode.SHADOW)
    assert "shadow" not in report_evidence(evidence, Mode.CANARY)
