"""Rollout policy: steps, gates, SLOs and the alpha budget. Validated, frozen.

A policy says how a rollout proceeds (``steps``), what the challenger must show before
it gets more traffic (``gates``), which service-level objectives it must not burn
through (``slos``), how often the judge may be wrong (``alpha``) and what happens when
a step runs out of time (``on_timeout``). Every invalid value raises
:class:`~modelcanary.errors.ConfigError` naming the field and, for choices, the allowed
values; nothing is silently repaired. ``examples/policy.yaml`` documents every field;
:mod:`modelcanary.policy_yaml` reads it (``load_policy`` and ``policy_from_dict`` are
importable from here too).

Example::

    alpha: 0.05
    steps:
      - {traffic_fraction: 0.05, min_samples: 100, min_duration_s: 10, max_duration_s: 300}
      - {traffic_fraction: 0.50, min_samples: 200, min_duration_s: 10, max_duration_s: 300}
    gates:
      - {metric: accuracy, margin: 0.05, critical: true}
      - {metric: latency_p95, margin: 0.5, margin_type: relative, min_margin: 5}
    slos:
      availability: {objective: 0.999}
      burn_rate: {windows: [{long_s: 300, short_s: 30, max_multiple: 14.4}]}

The alpha budget: ``alpha`` bounds the probability that a rollout of a challenger that
is in truth within every gate's margin (and not burning any SLO's error budget faster
than its limit) is rolled back or halted by the statistics, however often the judge
looks. It is split across the statistical gates, the sample-ratio check and the SLO
burn-rate gate by weighted Bonferroni (``alpha * weight / sum of weights``); a gate
judged in both canary and shadow steps splits its share again between the two modes.
The same per-gate share bounds the probability of passing a gate whose true effect is
worse than its margin. Drift gates are heuristics outside this budget.

Not to be confused with an SLO's *error budget* (``1 - objective``, the share of calls
that may fail): the burn-rate gate halts a rollout whose challenger spends it more than
``max_multiple`` times too fast (:mod:`modelcanary.judge.slo_gate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelcanary.errors import ConfigError
from modelcanary.events import Action, Mode

KPI_PREFIX = "kpi."


class Direction(StrEnum):
    """Which way is better for a metric."""

    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class MarginType(StrEnum):
    """Absolute margins are in the metric's units; relative ones are a fraction of the
    champion's value (the challenger may be ``margin * champion`` worse), for metrics
    whose values are positive (latency, log-loss, revenue)."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class MetricKind(StrEnum):
    """How a metric is compared: mean of per-request values, a quantile, or drift."""

    MEAN = "mean"
    QUANTILE = "quantile"
    DRIFT = "drift"


@dataclass(frozen=True)
class MetricSpec:
    """What the judge knows about a metric name."""

    name: str
    kind: MetricKind
    direction: Direction | None
    needs_outcome: bool
    half_range: float | None = None  # half the width of the value range, for bounded metrics
    quantile: float | None = None
    user_facing: bool = False  # depends on what the user was shown: canary only
    description: str = ""


_LOWER = Direction.LOWER_IS_BETTER
_HIGHER = Direction.HIGHER_IS_BETTER

METRICS: Mapping[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "accuracy", MetricKind.MEAN, _HIGHER, True, 0.5, description="prediction == label"
        ),
        MetricSpec("log_loss", MetricKind.MEAN, _LOWER, True, description="-log P(label), binary"),
        MetricSpec("brier", MetricKind.MEAN, _LOWER, True, 0.5, description="(score - label)^2"),
        MetricSpec("mae", MetricKind.MEAN, _LOWER, True, description="|prediction - label|"),
        MetricSpec("mse", MetricKind.MEAN, _LOWER, True, description="(prediction - label)^2"),
        MetricSpec("rmse", MetricKind.MEAN, _LOWER, True, description="sqrt of mse"),
        MetricSpec("error_rate", MetricKind.MEAN, _LOWER, False, 0.5, description="calls failed"),
        MetricSpec("latency_mean", MetricKind.MEAN, _LOWER, False, description="mean latency ms"),
        MetricSpec("latency_p50", MetricKind.QUANTILE, _LOWER, False, quantile=0.50),
        MetricSpec("latency_p95", MetricKind.QUANTILE, _LOWER, False, quantile=0.95),
        MetricSpec("latency_p99", MetricKind.QUANTILE, _LOWER, False, quantile=0.99),
        MetricSpec("input_drift", MetricKind.DRIFT, _LOWER, False, description="feature drift"),
        MetricSpec("prediction_drift", MetricKind.DRIFT, _LOWER, False, description="outputs"),
    )
}


def metric_spec(name: str) -> MetricSpec:
    """The spec of a built-in metric or of a business KPI named ``kpi.<name>``."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith(KPI_PREFIX) and len(name) > len(KPI_PREFIX):
        return MetricSpec(name, MetricKind.MEAN, None, True, user_facing=True, description="KPI")
    raise ConfigError(
        f"metric {name!r} is unknown; allowed: {', '.join(METRICS)} or kpi.<name> "
        "(a number carried in outcome events' kpis)"
    )


class TimeoutAction(StrEnum):
    """What happens when a step reaches its maximum duration without a conclusion."""

    ROLLBACK = "rollback"
    HALT = "halt"

    @property
    def action(self) -> Action:
        return Action(self.value)


@dataclass(frozen=True)
class Step:
    """One stage of a rollout: how much traffic the challenger gets and for how long.

    ``min_samples`` counts the challenger's predictions observed in this step.
    ``requires_approval`` makes the step a manual gate: when every gate passes, the
    rollout holds until an operator approves (``modelcanary rollout approve``).
    """

    traffic_fraction: float
    mode: Mode = Mode.CANARY
    min_samples: int = 200
    min_duration_s: float = 0.0
    max_duration_s: float = 600.0
    requires_approval: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.traffic_fraction <= 1.0:
            raise ConfigError(
                f"steps[].traffic_fraction: {self.traffic_fraction} must be in (0, 1]"
            )
        if self.min_samples < 0:
            raise ConfigError(f"steps[].min_samples: {self.min_samples} must be >= 0")
        if self.min_duration_s < 0 or self.max_duration_s <= self.min_duration_s:
            raise ConfigError(
                "steps[].max_duration_s must be greater than min_duration_s >= 0 "
                f"(got {self.min_duration_s} and {self.max_duration_s})"
            )


@dataclass(frozen=True)
class Gate:
    """What the challenger must show about one metric, compared with the champion.

    pass: the challenger is shown to be no worse than the champion by more than the
    margin; fail: it is shown to be worse by more than the margin. For drift gates the
    margin is the tolerated share of drifted columns (0-1).
    """

    metric: str
    direction: Direction
    margin: float = 0.0
    margin_type: MarginType = MarginType.ABSOLUTE
    min_margin: float = 0.0
    critical: bool = True
    alpha_weight: float = 1.0
    design_samples: int | None = None
    modes: tuple[Mode, ...] = (Mode.CANARY, Mode.SHADOW)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.metric

    @property
    def spec(self) -> MetricSpec:
        return metric_spec(self.metric)

    @property
    def statistical(self) -> bool:
        """Whether this gate spends part of the error budget (drift gates do not)."""
        return self.spec.kind is not MetricKind.DRIFT

    def __post_init__(self) -> None:
        where = f"gates[{self.label}]"
        spec = metric_spec(self.metric)
        if spec.direction is not None and self.direction is not spec.direction:
            raise ConfigError(
                f"{where}.direction: {self.metric} is {spec.direction.value}, "
                f"got {self.direction.value}"
            )
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigError(f"{where}.margin: {self.margin} must be a finite number >= 0")
        if spec.kind is MetricKind.DRIFT and (
            self.margin > 1 or self.margin_type is not MarginType.ABSOLUTE
        ):
            raise ConfigError(
                f"{where}.margin: for {self.metric} the margin is the tolerated share "
                "of drifted columns, an absolute number in [0, 1]"
            )
        if (
            self.margin_type is MarginType.RELATIVE
            and self.direction is Direction.HIGHER_IS_BETTER
            and self.margin >= 1
        ):
            raise ConfigError(
                f"{where}.margin: a relative margin of a higher_is_better metric must be < 1"
            )
        if self.metric == "rmse" and self.margin_type is not MarginType.RELATIVE:
            raise ConfigError(
                f"{where}.margin_type: rmse gates take a relative margin; "
                "use mse or mae for an absolute one"
            )
        if self.min_margin:
            if not (math.isfinite(self.min_margin) and self.min_margin > 0):
                raise ConfigError(f"{where}.min_margin: {self.min_margin} must be a number > 0")
            if spec.kind is not MetricKind.QUANTILE or self.margin_type is not MarginType.RELATIVE:
                raise ConfigError(
                    f"{where}.min_margin: an absolute floor is allowed only with a relative "
                    "margin on a latency quantile (latency_p50, latency_p95, latency_p99)"
                )
        if not (math.isfinite(self.alpha_weight) and self.alpha_weight > 0):
            raise ConfigError(f"{where}.alpha_weight: {self.alpha_weight} must be > 0")
        if self.design_samples is not None and self.design_samples < 1:
            raise ConfigError(f"{where}.design_samples: {self.design_samples} must be >= 1")
        if not self.modes:
            raise ConfigError(f"{where}.modes: list at least one of canary, shadow")
        if spec.user_facing and Mode.SHADOW in self.modes:
            raise ConfigError(
                f"{where}.modes: {self.metric} depends on what the user was shown, so it "
                "cannot be judged in shadow steps (the user saw the champion's answer); "
                "allowed: [canary]"
            )


@dataclass(frozen=True)
class SrmSettings:
    """Sequential sample-ratio-mismatch check (see :mod:`modelcanary.stats.srm`)."""

    enabled: bool = True
    alpha_weight: float = 1.0
    prior_strength: float = 1000.0
    max_units_per_step: int = 200_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha_weight) and self.alpha_weight > 0):
            raise ConfigError(f"srm.alpha_weight: {self.alpha_weight} must be > 0")
        if not (math.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise ConfigError(f"srm.prior_strength: {self.prior_strength} must be > 0")
        if self.max_units_per_step < 1:
            raise ConfigError(f"srm.max_units_per_step: {self.max_units_per_step} must be >= 1")


DRIFT_NUM_METHODS = ("wasserstein", "ks", "psi", "kl_div", "jensenshannon", "hellinger", "ed")
DRIFT_CAT_METHODS = ("jensenshannon", "chisquare", "psi", "kl_div", "hellinger", "TVD")


@dataclass(frozen=True)
class DriftSettings:
    """How the judge runs Evidently's drift detection on bounded samples of each arm."""

    enabled: bool = True
    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    threshold: float = 0.1
    sample_size: int = 1000
    min_rows: int = 100
    recompute_growth: float = 1.5

    def __post_init__(self) -> None:
        if self.num_method not in DRIFT_NUM_METHODS:
            raise ConfigError(
                f"drift.num_method: {self.num_method!r} is not one of "
                + ", ".join(DRIFT_NUM_METHODS)
            )
        if self.cat_method not in DRIFT_CAT_METHODS:
            raise ConfigError(
                f"drift.cat_method: {self.cat_method!r} is not one of "
                + ", ".join(DRIFT_CAT_METHODS)
            )
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ConfigError(f"drift.threshold: {self.threshold} must be > 0")
        if self.sample_size < 10:
            raise ConfigError(f"drift.sample_size: {self.sample_size} must be >= 10")
        if not 1 <= self.min_rows <= self.sample_size:
            raise ConfigError(f"drift.min_rows: {self.min_rows} must be in [1, sample_size]")
        if not self.recompute_growth > 1.0:
            raise ConfigError(f"drift.recompute_growth: {self.recompute_growth} must be > 1")


SLO_BUCKET_S = 5  # the evaluator counts calls in buckets of this many seconds
SLO_MAX_WINDOW_S = 3600  # and keeps this long (plus a margin) of them


def _check_objective(where: str, objective: float) -> None:
    if not (math.isfinite(objective) and 0.0 < objective < 1.0):
        raise ConfigError(
            f"{where}.objective: {objective} must be a share in (0, 1), e.g. 0.999 for 99.9%"
        )


@dataclass(frozen=True)
class AvailabilitySlo:
    """The share of the challenger's calls that must succeed (no error)."""

    objective: float

    def __post_init__(self) -> None:
        _check_objective("slos.availability", self.objective)


@dataclass(frozen=True)
class LatencySlo:
    """The share of the challenger's calls that must take at most ``threshold_ms``
    (failed calls count with the latency they had)."""

    threshold_ms: float
    objective: float

    def __post_init__(self) -> None:
        _check_objective("slos.latency", self.objective)
        if not (math.isfinite(self.threshold_ms) and self.threshold_ms > 0):
            raise ConfigError(f"slos.latency.threshold_ms: {self.threshold_ms} must be > 0")


@dataclass(frozen=True)
class BurnWindow:
    """Multiwindow burn-rate rule (SRE workbook, ch. 5): burning when the burn rate is
    above ``max_multiple`` in the last ``long_s`` seconds (shown with confidence) and in
    the last ``short_s`` seconds (at face value: the burn has not stopped)."""

    long_s: int
    short_s: int
    max_multiple: float

    def __post_init__(self) -> None:
        where = "slos.burn_rate.windows[]"
        for name in ("long_s", "short_s"):
            value = getattr(self, name)
            if value < SLO_BUCKET_S or value % SLO_BUCKET_S:
                raise ConfigError(
                    f"{where}.{name}: {value} must be a positive multiple of {SLO_BUCKET_S} s "
                    f"(the evaluator counts calls in {SLO_BUCKET_S} s buckets)"
                )
        if self.short_s >= self.long_s:
            raise ConfigError(
                f"{where}.short_s: {self.short_s} must be shorter than long_s ({self.long_s})"
            )
        if self.long_s > SLO_MAX_WINDOW_S:
            raise ConfigError(
                f"{where}.long_s: {self.long_s} must be at most {SLO_MAX_WINDOW_S} s "
                "(the evaluator keeps an hour of call counts)"
            )
        if not (math.isfinite(self.max_multiple) and self.max_multiple > 0):
            raise ConfigError(f"{where}.max_multiple: {self.max_multiple} must be > 0")


@dataclass(frozen=True)
class BurnRateSettings:
    """When an SLO counts as burning: any of ``windows``, once the long window holds at
    least ``min_calls`` challenger calls. ``alpha_weight``: the gate's share of alpha."""

    windows: tuple[BurnWindow, ...] = (BurnWindow(300, 30, 14.4),)
    min_calls: int = 50
    alpha_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.windows:
            raise ConfigError("slos.burn_rate.windows: list at least one window")
        if self.min_calls < 1:
            raise ConfigError(f"slos.burn_rate.min_calls: {self.min_calls} must be >= 1")
        if not (math.isfinite(self.alpha_weight) and self.alpha_weight > 0):
            raise ConfigError(f"slos.burn_rate.alpha_weight: {self.alpha_weight} must be > 0")


@dataclass(frozen=True)
class SloSettings:
    """Service-level objectives of the challenger and the burn rate that halts it."""

    availability: AvailabilitySlo | None = None
    latency: LatencySlo | None = None
    burn_rate: BurnRateSettings = field(default_factory=BurnRateSettings)

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ConfigError("slos: give at least one objective (availability, latency)")
        for name, slo in self.objectives:
            for i, w in enumerate(self.burn_rate.windows):
                limit = w.max_multiple * (1.0 - slo.objective)
                if limit >= 1.0:
                    raise ConfigError(
                        f"slos.burn_rate.windows[{i}].max_multiple: {w.max_multiple:g} times "
                        f"the error budget of {name} ({1 - slo.objective:.4g}) is {limit:.4g}, "
                        "not a share of calls below 1; lower the multiple or raise the objective"
                    )

    @property
    def objectives(self) -> tuple[tuple[str, AvailabilitySlo | LatencySlo], ...]:
        """(name, objective) of each SLO set: ``availability``, ``latency``."""
        out: list[tuple[str, AvailabilitySlo | LatencySlo]] = []
        if self.availability is not None:
            out.append(("availability", self.availability))
        if self.latency is not None:
            out.append(("latency", self.latency))
        return tuple(out)


@dataclass(frozen=True)
class Policy:
    """How a rollout proceeds and what the challenger must show at each step.

    ``design_samples`` tunes the sequential tests: the number of samples per arm at
    which their boundaries are tightest (see
    :mod:`modelcanary.stats.confidence_sequences`); gates may override it.
    ``min_samples_per_arm`` is the least data a mean gate needs before any verdict.
    """

    steps: tuple[Step, ...]
    gates: tuple[Gate, ...] = ()
    alpha: float = 0.05
    on_timeout: TimeoutAction = TimeoutAction.ROLLBACK
    design_samples: int = 400
    min_samples_per_arm: int = 30
    srm: SrmSettings = field(default_factory=SrmSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    slos: SloSettings | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("steps: a policy needs at least one step")
        if not (math.isfinite(self.alpha) and 0.0 < self.alpha <= 0.5):
            raise ConfigError(f"alpha: {self.alpha} must be in (0, 0.5]")
        if self.design_samples < 1:
            raise ConfigError(f"design_samples: {self.design_samples} must be >= 1")
        if self.min_samples_per_arm < 2:
            raise ConfigError(f"min_samples_per_arm: {self.min_samples_per_arm} must be >= 2")
        labels = [g.label for g in self.gates]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ConfigError(
                f"gates: names must be unique; give gates a name (duplicates: {duplicates})"
            )
        step_modes = {s.mode for s in self.steps}
        for gate in self.gates:
            if not step_modes & set(gate.modes):
                raise ConfigError(
                    f"gates[{gate.label}].modes: the gate is judged only in "
                    f"{'/'.join(m.value for m in gate.modes)} steps but the policy has none"
                    + (
                        f" ({gate.metric} depends on what the user was shown: canary only)"
                        if gate.spec.user_facing
                        else ""
                    )
                )

    @property
    def modes(self) -> frozenset[Mode]:
        return frozenset(s.mode for s in self.steps)

    def _weights(self) -> float:
        total = sum(g.alpha_weight for g in self.gates if g.statistical)
        total += self.srm.alpha_weight if self.srm.enabled else 0.0
        return total + (self.slos.burn_rate.alpha_weight if self.slos is not None else 0.0)

    def gate_alpha(self, gate: Gate) -> float:
        """The gate's share of alpha for one mode (per side: pass and fail each)."""
        if not gate.statistical:
            return 0.0
        share = self.alpha * gate.alpha_weight / self._weights()
        judged_in = len(self.modes & set(gate.modes))
        return share / max(judged_in, 1)

    @property
    def srm_alpha(self) -> float:
        if not self.srm.enabled:
            return 0.0
        return self.alpha * self.srm.alpha_weight / self._weights()

    @property
    def slo_alpha(self) -> float:
        """The SLO burn-rate gate's share of alpha, for the whole rollout."""
        if self.slos is None:
            return 0.0
        return self.alpha * self.slos.burn_rate.alpha_weight / self._weights()

    @property
    def planned_duration_s(self) -> float:
        """The longest the rollout runs without a pause: every step at its maximum."""
        return sum(s.max_duration_s for s in self.steps)

    def design_for(self, gate: Gate) -> int:
        return gate.design_samples or self.design_samples

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values; ``policy_from_dict(p.to_dict()) == p``."""
        return _plain(self)


def _plain(obj: Any) -> Any:
    if isinstance(obj, StrEnum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [_plain(x) for x in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    return obj


def default_policy() -> Policy:
    """Three canary steps (5% -> 25% -> 50%) guarded by accuracy, errors and latency.

    Sized for the demo (a binary classifier at 100-300 requests/s with labels): an
    equal challenger passes every gate after roughly 150-250 challenger samples and is
    promoted in about a minute; a challenger 0.16 less accurate is rolled back after
    roughly 100 challenger samples.
    """
    return Policy(
        steps=(
            Step(traffic_fraction=0.05, min_samples=100, min_duration_s=10, max_duration_s=300),
            Step(traffic_fraction=0.25, min_samples=100, min_duration_s=10, max_duration_s=300),
            Step(traffic_fraction=0.50, min_samples=100, min_duration_s=10, max_duration_s=300),
        ),
        gates=(
            Gate("accuracy", Direction.HIGHER_IS_BETTER, margin=0.05, critical=True),
            Gate("error_rate", Direction.LOWER_IS_BETTER, margin=0.01, critical=True),
            Gate(
                "latency_p95",
                Direction.LOWER_IS_BETTER,
                margin=0.5,
                margin_type=MarginType.RELATIVE,
                min_margin=5.0,
                critical=False,
            ),
        ),
        alpha=0.05,
        design_samples=400,
    )


# ---------------------------------------------------------------- reading (policy_yaml)
# Imported when called: modelcanary.policy_yaml imports this module's dataclasses.


def policy_from_dict(raw: Mapping[str, Any]) -> Policy:
    """Build and validate a policy from parsed YAML/JSON (see :mod:`modelcanary.policy_yaml`)."""
    from modelcanary.policy_yaml import policy_from_dict as parse

    return parse(raw)


def load_policy(path: Path) -> Policy:
    """Read, parse and validate a policy YAML file (see :mod:`modelcanary.policy_yaml`)."""
    from modelcanary.policy_yaml import load_policy as load

    return load(path)
