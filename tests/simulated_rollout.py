"""A small rollout simulated in memory and judged by the real judge, for report tests.

Traffic is drawn per 10-second tick (the controller's hold-recording cadence); each
tick's prediction events go through :meth:`RolloutEvidence.observe_prediction` (so
latencies, errors, features, outputs and sample-ratio counts are real), labelled
quality values and KPIs through the bulk ``add_*`` methods. The judge decides after
every tick; the decisions are returned as the dicts the audit trail stores, and
:func:`record` writes them to MLflow with :class:`~modelcanary.audit.AuditLog`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from mlflow import MlflowClient

from modelcanary.audit import AuditLog
from modelcanary.events import Action, Arm, DecisionEvent, Mode, PredictionEvent, to_dict
from modelcanary.judge import JudgeContext, RolloutEvidence, judge
from modelcanary.policy import (
    Direction,
    DriftSettings,
    Gate,
    MarginType,
    Policy,
    Step,
)
from modelcanary.registry import Registry
from modelcanary.report.extras import evidently_html, report_evidence

TICK_S = 10.0
START = datetime(2025, 3, 1, 9, 30, tzinfo=UTC).timestamp()


def report_policy(drift: bool = True) -> Policy:
    """Shadow, then two canary steps; quality, errors, latency and a KPI."""
    return Policy(
        steps=(
            Step(0.5, Mode.SHADOW, min_samples=100, min_duration_s=10, max_duration_s=120),
            Step(0.2, Mode.CANARY, min_samples=100, min_duration_s=10, max_duration_s=120),
            Step(0.5, Mode.CANARY, min_samples=100, min_duration_s=10, max_duration_s=120),
        ),
        gates=(
            Gate("accuracy", Direction.HIGHER_IS_BETTER, margin=0.05, critical=True),
            Gate("error_rate", Direction.LOWER_IS_BETTER, margin=0.02, critical=True),
            Gate(
                "latency_p95",
                Direction.LOWER_IS_BETTER,
                margin=0.5,
                margin_type=MarginType.RELATIVE,
                min_margin=5.0,
                critical=False,
            ),
            Gate(
                "kpi.converted",
                Direction.HIGHER_IS_BETTER,
                margin=0.08,
                critical=False,
                modes=(Mode.CANARY,),
            ),
        ),
        drift=DriftSettings(enabled=drift, min_rows=100, sample_size=500),
    )


@dataclass(frozen=True)
class Arms:
    """How the challenger behaves compared with the champion (accuracy 0.93)."""

    accuracy: float = 0.93
    latency_ms: float = 6.0
    error_rate: float = 0.0
    feature_shift: float = 0.0
    score_shift: float = 0.0  # added to the score's logit


GOOD = Arms()
BAD = Arms(accuracy=0.72, latency_ms=9.0, error_rate=0.01, feature_shift=1.0, score_shift=1.0)


@dataclass
class Simulation:
    model: str
    rollout_id: str
    policy: Policy
    decisions: list[DecisionEvent]
    evidence: RolloutEvidence
    mode: Mode


def _ts(t: float) -> str:
    return (
        datetime.fromtimestamp(START + t, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def simulate(
    model: str,
    challenger: Arms = GOOD,
    policy: Policy | None = None,
    rate_per_s: float = 30.0,
    max_ticks: int = 30,
    seed: int = 7,
    versions: tuple[str, str] = ("1", "2"),
) -> Simulation:
    """Run the rollout until the judge ends it (or ``max_ticks``); every decision kept."""
    policy = policy or report_policy()
    rng = np.random.default_rng(seed)
    rollout_id = f"{model}-v{versions[1]}-sim"
    evidence = RolloutEvidence(sample_size=policy.drift.sample_size)
    champion = Arms()
    step, step_started, t = 0, 0.0, 0.0
    decisions: list[DecisionEvent] = []
    counter = 0
    for _ in range(max_ticks):
        current = policy.steps[step]
        n = int(rate_per_s * TICK_S)
        for _ in range(n):
            counter += 1
            request_id = f"req-{counter}"
            to_challenger = rng.random() < current.traffic_fraction
            arms = [Arm.CHAMPION]
            if current.mode is Mode.SHADOW and to_challenger:
                arms.append(Arm.CHALLENGER)
            elif to_challenger:
                arms = [Arm.CHALLENGER]
            base = float(rng.normal(0.0, 1.0))  # the request's difficulty, shared by both arms
            for arm in arms:
                spec = challenger if arm is Arm.CHALLENGER else champion
                shift = spec.feature_shift if current.mode is Mode.CANARY else 0.0
                failed = rng.random() < spec.error_rate
                logit = base + spec.score_shift + float(rng.normal(0.0, 0.3))
                score = 1.0 / (1.0 + np.exp(-logit))
                evidence.observe_prediction(
                    PredictionEvent(
                        model=model,
                        request_id=request_id,
                        version=versions[arm is Arm.CHALLENGER],
                        arm=arm,
                        mode=current.mode,
                        served=arm is Arm.CHAMPION or current.mode is Mode.CANARY,
                        prediction=None if failed else int(score > 0.5),
                        score=None if failed else score,
                        latency_ms=float(rng.lognormal(np.log(spec.latency_ms), 0.3)),
                        error="timeout" if failed else None,
                        rollout_id=rollout_id,
                        step=step,
                        traffic_fraction=current.traffic_fraction,
                        features={
                            "mean_radius": float(rng.normal(14 + shift, 3)),
                            "mean_texture": float(rng.normal(19, 4)),
                            "segment": str(rng.choice(["new", "returning"])),
                        },
                    )
                )
        labelled = int(n * current.traffic_fraction)
        if current.mode is Mode.SHADOW:
            champ = rng.random(labelled) < champion.accuracy
            flip = rng.random(labelled) < abs(champion.accuracy - challenger.accuracy) + 0.03
            evidence.add_paired("accuracy", np.where(flip, ~champ, champ), champ, step)
        else:
            for arm, spec, count in (
                (Arm.CHALLENGER, challenger, labelled),
                (Arm.CHAMPION, champion, n - labelled),
            ):
                evidence.add_metric("accuracy", arm, rng.random(count) < spec.accuracy, step)
                evidence.add_metric("kpi.converted", arm, rng.random(count) < 0.12, step)
        t += TICK_S
        judgement = judge(policy, evidence, JudgeContext(rollout_id, step, step_started, t))
        action = judgement.action
        to_state = {
            Action.ADVANCE: f"running:{step + 1}",
            Action.PROMOTE: "promoted",
            Action.ROLLBACK: "rolled_back",
            Action.HALT: "halted",
        }.get(action, f"running:{step}")
        fraction = {
            Action.ADVANCE: policy.steps[min(step + 1, len(policy.steps) - 1)].traffic_fraction,
            Action.PROMOTE: 1.0,
            Action.ROLLBACK: 0.0,
        }.get(action, current.traffic_fraction)
        decisions.append(
            DecisionEvent(
                model=model,
                rollout_id=rollout_id,
                action=action,
                from_state=f"running:{step}",
                to_state=to_state,
                traffic_fraction=fraction,
                reason=judgement.reason,
                evidence={
                    **judgement.evidence,
                    **report_evidence(evidence, current.mode),
                    "champion_version": versions[0],
                    "challenger_version": versions[1],
                },
                ts=_ts(t),
            )
        )
        if action is Action.ADVANCE:
            step, step_started = step + 1, t
        elif action is not Action.HOLD:
            break
    return Simulation(model, rollout_id, policy, decisions, evidence, policy.steps[step].mode)


def decision_dicts(simulation: Simulation) -> list[dict]:
    return [to_dict(d) for d in simulation.decisions]


def register_versions(registry: Registry, model: str, count: int = 2) -> list[str]:
    """Bare model versions (no model files: the audit trail only tags them)."""
    client: MlflowClient = registry.client
    client.create_registered_model(model)
    return [
        str(
            client.create_model_version(
                model, source=f"s3://nonexistent-bucket/{model}/{i}"
            ).version
        )
        for i in range(count)
    ]


def record(registry: Registry, simulation: Simulation, with_evidently: bool = False) -> list[str]:
    """Write every decision as the controller would; return the run ids in order.
    With ``with_evidently``, the terminal decision's run carries Evidently's HTML."""
    audit = AuditLog(registry)
    run_ids = []
    last = len(simulation.decisions) - 1
    for i, decision in enumerate(simulation.decisions):
        artifacts = None
        if with_evidently and i == last:
            html = evidently_html(simulation.evidence, simulation.mode, simulation.policy.drift)
            artifacts = {"drift.html": html} if html else None
        run_ids.append(
            audit.record(
                decision,
                simulation.policy,
                decision.action is not Action.HOLD,
                decision.evidence["champion_version"],
                decision.evidence["challenger_version"],
                artifacts=artifacts,
            )
        )
    return run_ids
