"""Drift: Evidently on bounded samples of each arm; reported always, a gate on demand.

``input_drift`` compares the inputs of the challenger's cohort with the champion's (in
canary mode; in shadow mode both arms see the same requests, so it does not apply);
``prediction_drift`` compares the arms' outputs (score, else prediction). A drift
gate passes while the share of drifted columns is at most its margin.

Evidently takes 0.1-0.5 s per run (and ~3 s to import the first time), so reports are
memoised on the evidence and recomputed only when the arms' observed rows have grown
by ``drift.recompute_growth`` since the last run. The samples are bottom-k samples by
request id, so in shadow mode both arms' samples are the same requests.
"""

from __future__ import annotations

from typing import Any

from modelcanary.events import Arm, Mode
from modelcanary.judge.evidence import RolloutEvidence
from modelcanary.judge.verdicts import GateContext, GateVerdict, Verdict
from modelcanary.policy import DriftSettings
from modelcanary.stats.drift import DriftReport, compute_drift
from modelcanary.stats.reservoir import Reservoir

INPUT = "input_drift"
PREDICTION = "prediction_drift"


def applies(kind: str, mode: Mode) -> bool:
    return not (kind == INPUT and mode is Mode.SHADOW)


def _samples(evidence: RolloutEvidence, kind: str, mode: Mode) -> tuple[Reservoir, Reservoir]:
    get = evidence.inputs if kind == INPUT else evidence.outputs
    return get(mode, Arm.CHAMPION), get(mode, Arm.CHALLENGER)


def drift_report(
    evidence: RolloutEvidence, kind: str, mode: Mode, settings: DriftSettings
) -> DriftReport | None:
    """The (memoised) report, or None while an arm has fewer than ``min_rows`` rows."""
    if not applies(kind, mode):
        return None
    reference, current = _samples(evidence, kind, mode)
    if min(len(reference), len(current)) < settings.min_rows:
        return None
    key = (kind, mode, settings)
    seen = reference.seen + current.seen
    cached = evidence.drift_cache.get(key)
    if cached is not None and seen < cached[0] * settings.recompute_growth:
        return cached[1]
    k = settings.sample_size
    report = compute_drift(
        reference.items()[:k],
        current.items()[:k],
        num_method=settings.num_method,
        cat_method=settings.cat_method,
        threshold=settings.threshold,
    )
    evidence.drift_cache[key] = (seen, report)
    return report


def drift_evidence(
    evidence: RolloutEvidence, mode: Mode, settings: DriftSettings
) -> dict[str, Any]:
    """Both drift reports as JSON-ready dicts (None where not available)."""
    out: dict[str, Any] = {}
    for kind in (INPUT, PREDICTION):
        report = drift_report(evidence, kind, mode, settings) if settings.enabled else None
        out[kind] = None if report is None else report.to_dict()
    return out


def evaluate_drift(ctx: GateContext, evidence: RolloutEvidence) -> GateVerdict:
    gate = ctx.gate
    kind = gate.metric
    base = {
        "gate": gate.label,
        "metric": kind,
        "critical": gate.critical,
        "margin": f"at most {gate.margin:.0%} of columns drifted",
        "method": f"Evidently DataDriftPreset ({ctx.drift.num_method}/{ctx.drift.cat_method}, "
        f"threshold {ctx.drift.threshold:g}); outside the alpha budget",
    }
    if not applies(kind, ctx.mode):
        return GateVerdict(
            verdict=Verdict.NOT_APPLICABLE,
            reason=f"{gate.label}: both arms see the same inputs in shadow mode",
            **base,
        )
    reference, current = _samples(evidence, kind, ctx.mode)
    samples = {Arm.CHALLENGER.value: len(current), Arm.CHAMPION.value: len(reference)}
    report = drift_report(evidence, kind, ctx.mode, ctx.drift)
    if report is None or not report.columns:
        return GateVerdict(
            verdict=Verdict.NO_DATA,
            reason=f"{gate.label}: {min(samples.values())} rows in the smaller arm, "
            f"{ctx.drift.min_rows} needed",
            samples=samples,
            samples_needed=max(ctx.drift.min_rows - len(current), 0) or None,
            **base,
        )
    drifted = [c.column for c in report.columns if c.drifted]
    share = report.drifted_share
    detail = report.to_dict()
    listed = ", ".join(drifted[:5]) + (" ..." if len(drifted) > 5 else "")
    shown = f"{len(drifted)} of {len(report.columns)} columns drifted" + (
        f" ({listed})" if drifted else ""
    )
    verdict = Verdict.PASS if share <= gate.margin else Verdict.FAIL
    tail = "within" if verdict is Verdict.PASS else "more than"
    return GateVerdict(
        verdict=verdict,
        reason=f"{gate.label}: {shown}; {tail} the tolerated {gate.margin:.0%}",
        estimate=share,
        samples=samples,
        details=detail,
        **base,
    )
