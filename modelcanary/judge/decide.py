"""Stage 4 of the judge: from scorecard to decision, with one sentence a human can read.

Order of precedence (the first that holds wins):

1. a critical gate fails                         -> ROLLBACK
2. the challenger burns an SLO's error budget
   faster than the policy allows                 -> HALT (split frozen, a human decides)
3. the sample ratio is off (SRM detected)        -> HALT (arms not comparable)
4. every applicable gate passes and the step's
   minimum samples and duration are met          -> ADVANCE, or PROMOTE at the last step
5. the step has run for its maximum duration     -> policy.on_timeout (default ROLLBACK)
6. otherwise                                     -> HOLD

A burning SLO outranks the sample-ratio check: it is judged on the challenger alone,
so it holds whether or not the arms are comparable, and it is the user-visible harm.

``judge`` is pure apart from memoising drift reports on the evidence; it reads the
clock only through ``JudgeContext.now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelcanary.errors import RolloutError
from modelcanary.events import Action, Arm
from modelcanary.judge.drift_gate import drift_evidence
from modelcanary.judge.evidence import RolloutEvidence
from modelcanary.judge.gates import evaluate_gate
from modelcanary.judge.scorecard import Scorecard
from modelcanary.judge.slo_gate import SloResult, evaluate_slos
from modelcanary.judge.verdicts import GateVerdict, Verdict
from modelcanary.policy import Policy, Step
from modelcanary.stats.srm import SrmResult, srm_test


@dataclass(frozen=True)
class JudgeContext:
    rollout_id: str
    step_index: int
    step_started_at: float  # epoch seconds
    now: float  # epoch seconds


@dataclass(frozen=True)
class Judgement:
    action: Action
    reason: str
    verdicts: tuple[GateVerdict, ...]
    evidence: dict[str, Any]


def judge(policy: Policy, evidence: RolloutEvidence, ctx: JudgeContext) -> Judgement:
    """Decide what the rollout should do now, from everything observed so far."""
    if not 0 <= ctx.step_index < len(policy.steps):
        raise RolloutError(
            f"step_index {ctx.step_index} is outside the policy's {len(policy.steps)} steps"
        )
    step = policy.steps[ctx.step_index]
    is_last = ctx.step_index == len(policy.steps) - 1
    verdicts = tuple(evaluate_gate(policy, g, evidence, step.mode) for g in policy.gates)
    srm = (
        srm_test(evidence.ratio_strata(), policy.srm_alpha, policy.srm.prior_strength)
        if policy.srm.enabled
        else None
    )
    card = Scorecard(verdicts, srm)
    slos = evaluate_slos(policy, evidence.slo_windows(), ctx.now)
    elapsed = max(ctx.now - ctx.step_started_at, 0.0)
    step_samples = evidence.predictions(Arm.CHALLENGER, ctx.step_index)
    action, reason = _decide(policy, ctx, step, is_last, card, slos, elapsed, step_samples)
    return Judgement(
        action=action,
        reason=reason,
        verdicts=verdicts,
        evidence=_evidence(policy, evidence, ctx, step, is_last, card, slos, elapsed, step_samples),
    )


def _decide(
    policy: Policy,
    ctx: JudgeContext,
    step: Step,
    is_last: bool,
    card: Scorecard,
    slos: SloResult | None,
    elapsed: float,
    step_samples: int,
) -> tuple[Action, str]:
    if card.critical_failures:
        first = card.critical_failures[0]
        more = len(card.critical_failures) - 1
        extra = f" (and {more} more critical gate{'s' if more > 1 else ''})" if more else ""
        return Action.ROLLBACK, f"Roll back: critical gate {first.reason}{extra}."
    if slos is not None and slos.burning:
        return (
            Action.HALT,
            f"Halt: error budget burning: {slos.sentence()}. The split is frozen: roll back, "
            "or resume once the cause is fixed.",
        )
    if card.srm_detected and card.srm is not None:
        return Action.HALT, "Halt: " + _srm_sentence(card.srm)
    short = _minimums_missing(step, elapsed, step_samples)
    where = (
        f"step {ctx.step_index + 1} of {len(policy.steps)} "
        f"({step.traffic_fraction:.0%} {step.mode.value})"
    )
    if card.all_passed and not short:
        n = len(card.applicable)
        gates = f"all {n} gate{'s' if n != 1 else ''} passed" if n else "no gates to pass"
        if is_last:
            return (
                Action.PROMOTE,
                f"Promote: {gates} at the last {where}, "
                f"with {step_samples} challenger samples in {elapsed:.0f} s.",
            )
        nxt = policy.steps[ctx.step_index + 1]
        return (
            Action.ADVANCE,
            f"Advance to {nxt.traffic_fraction:.0%} {nxt.mode.value}: {gates} in {where}, "
            f"with {step_samples} challenger samples in {elapsed:.0f} s.",
        )
    waiting = _waiting_for(card, short)
    if elapsed >= step.max_duration_s:
        action = policy.on_timeout.action
        verb = "Roll back" if action is Action.ROLLBACK else "Halt"
        return (
            action,
            f"{verb}: {where} reached its maximum of {step.max_duration_s:g} s "
            f"without a conclusion ({waiting}).",
        )
    return Action.HOLD, f"Hold: waiting for {waiting}."


def _minimums_missing(step: Step, elapsed: float, step_samples: int) -> list[str]:
    out = []
    if step_samples < step.min_samples:
        out.append(
            f"the step minimum of {step.min_samples} challenger samples (have {step_samples})"
        )
    if elapsed < step.min_duration_s:
        out.append(f"the step minimum of {step.min_duration_s:g} s (at {elapsed:.0f} s)")
    return out


def _waiting_for(card: Scorecard, short: list[str]) -> str:
    parts = []
    for v in card.blocking:
        if v.verdict is Verdict.FAIL:
            parts.append(f"{v.gate} failed (non-critical: a human should look)")
        elif v.verdict is Verdict.INCONCLUSIVE and v.samples_needed:
            parts.append(f"{v.gate} (inconclusive, ~{v.samples_needed} more challenger samples)")
        else:
            parts.append(f"{v.gate} ({v.verdict.value.replace('_', ' ')})")
    return "; ".join(parts + short) or "nothing"


def _srm_sentence(srm: SrmResult) -> str:
    worst = srm.worst
    threshold = 1.0 / srm.alpha
    if worst is None:
        return "sample ratio mismatch."
    observed = worst.observed_fraction or 0.0
    return (
        f"sample ratio mismatch in {worst.key}: the challenger got {worst.challenger} of "
        f"{worst.total} ({observed:.1%}) where the policy sends {worst.fraction:.0%} "
        f"(e-value {_evalue(srm.log_evalue)} >= 1/alpha = {threshold:.0f}); the arms are "
        "not comparable (routing or cohort bug)."
    )


def _evalue(log_e: float) -> str:
    return f"{math.exp(log_e):.3g}" if log_e < 700 else f"e^{log_e:.0f}"


def _evidence(
    policy: Policy,
    evidence: RolloutEvidence,
    ctx: JudgeContext,
    step: Step,
    is_last: bool,
    card: Scorecard,
    slos: SloResult | None,
    elapsed: float,
    step_samples: int,
) -> dict[str, Any]:
    srm = card.srm
    return _json_safe(
        {
            "rollout_id": ctx.rollout_id,
            "step": {
                "index": ctx.step_index,
                "traffic_fraction": step.traffic_fraction,
                "mode": step.mode.value,
                "is_last": is_last,
                "elapsed_s": elapsed,
                "challenger_samples": step_samples,
                "min_samples": step.min_samples,
                "min_duration_s": step.min_duration_s,
                "max_duration_s": step.max_duration_s,
            },
            "gates": [v.to_dict() for v in card.verdicts],
            "verdict_counts": card.counts(),
            "srm": None
            if srm is None
            else {
                "detected": srm.detected,
                "alpha": srm.alpha,
                "log_evalue": srm.log_evalue,
                "threshold_log_evalue": math.log(1.0 / srm.alpha) if srm.alpha > 0 else None,
                "strata": [
                    {
                        "key": s.key,
                        "configured_fraction": s.fraction,
                        "observed_fraction": s.observed_fraction,
                        "challenger": s.challenger,
                        "total": s.total,
                        "log_evalue": s.log_evalue,
                    }
                    for s in srm.strata
                ],
            },
            "drift": drift_evidence(evidence, step.mode, policy.drift),
            "samples": evidence.summary(),
            "alpha": {
                "total": policy.alpha,
                "srm": policy.srm_alpha,
                "slos": policy.slo_alpha,
                "per_gate": {g.label: policy.gate_alpha(g) for g in policy.gates},
            },
            "slos": None if slos is None else slos.to_dict(),
            "policy": policy.to_dict(),
        }
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy scalar
        return _json_safe(obj.item())
    return str(obj)
