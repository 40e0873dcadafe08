"""Stage 2 of the judge: one verdict per gate, dispatched on the metric's kind.

Mean metrics (quality, error rate, KPIs) use anytime-valid contrast bounds
(:mod:`~modelcanary.judge.mean_gate`), latency quantiles use order-statistic bounds
(:mod:`~modelcanary.judge.quantile_gate`), drift uses Evidently
(:mod:`~modelcanary.judge.drift_gate`). An exception inside one gate becomes that
gate's ERROR verdict, not a crash of the judge.
"""

from __future__ import annotations

from modelcanary.events import Mode
from modelcanary.judge.drift_gate import evaluate_drift
from modelcanary.judge.evidence import RolloutEvidence
from modelcanary.judge.mean_gate import evaluate_mean
from modelcanary.judge.quantile_gate import evaluate_quantile
from modelcanary.judge.verdicts import GateContext, GateVerdict, Verdict
from modelcanary.policy import Gate, MetricKind, Policy

_EVALUATORS = {
    MetricKind.MEAN: evaluate_mean,
    MetricKind.QUANTILE: evaluate_quantile,
    MetricKind.DRIFT: evaluate_drift,
}


def evaluate_gate(policy: Policy, gate: Gate, evidence: RolloutEvidence, mode: Mode) -> GateVerdict:
    """The gate's verdict in a step of ``mode``; an exception becomes an ERROR verdict."""
    if mode not in gate.modes:
        return GateVerdict(
            gate.label,
            gate.metric,
            Verdict.NOT_APPLICABLE,
            gate.critical,
            f"{gate.label} is judged only in {'/'.join(m.value for m in gate.modes)} steps",
        )
    ctx = GateContext(
        gate=gate,
        mode=mode,
        alpha=policy.gate_alpha(gate),
        design_samples=policy.design_for(gate),
        min_samples_per_arm=policy.min_samples_per_arm,
        drift=policy.drift,
    )
    try:
        return _EVALUATORS[gate.spec.kind](ctx, evidence)
    except Exception as exc:  # a broken gate must not stop the judge
        return GateVerdict(
            gate.label,
            gate.metric,
            Verdict.ERROR,
            gate.critical,
            f"{gate.label} could not be evaluated: {type(exc).__name__}: {exc}",
            alpha=ctx.alpha,
        )
