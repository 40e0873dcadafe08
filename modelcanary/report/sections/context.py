"""Sections that set the scene: the policy in force and the timeline of decisions."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from modelcanary.report import charts
from modelcanary.report.format import chip, legend, num, pct, table
from modelcanary.report.sections.common import section
from modelcanary.report.svg import fmt_clock
from modelcanary.report.timeline import Rollout, format_duration, gate_specs, utc_text


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
