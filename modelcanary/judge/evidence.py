"""Per-rollout evidence: mergeable accumulators of everything the judge compares.

One :class:`RolloutEvidence` per rollout. The evaluator feeds it every prediction event
(:meth:`~RolloutEvidence.observe_prediction`) and every joined request
(:meth:`~RolloutEvidence.observe_request`); workers that each saw a partition merge
their evidence into one (:meth:`~RolloutEvidence.merge` equals one pass over the
union). It holds only sufficient statistics and bounded samples, never raw history:

- per (mode, arm, step): calls and errors (error rate; sample counts), latency moments;
- per (mode, arm): a latency sketch (p50/p95/p99);
- canary, per (metric, arm, step): moments of each quality metric and KPI;
- shadow, per (metric, step): paired co-moments (challenger, champion) of each metric;
- per (step, mode, traffic fraction): the challenger's share, for the SRM test;
- per (mode, arm): bounded uniform samples of inputs and outputs, for drift;
- per arm: calls, errors and latencies per 5 s of event time, for the SLO burn-rate gate.

Steps are strata: the judge combines per-step estimates, so a change of traffic mix
between steps cannot bias a comparison. Bulk ``add_*`` methods take numpy arrays for
replays and simulations (the decision-quality benchmark) and are equivalent to
observing the same values one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from modelcanary.events import Arm, Mode, PredictionEvent
from modelcanary.join import JoinedRequest
from modelcanary.judge.clean import NO_STEP, request_parts
from modelcanary.judge.slo_windows import SloWindows
from modelcanary.stats.bernoulli import Bernoulli
from modelcanary.stats.moments import CoMoments, Moments
from modelcanary.stats.quantiles import LogHistogram
from modelcanary.stats.reservoir import Reservoir, sample_key
from modelcanary.stats.srm import RatioCounts

BINARY_METRICS = frozenset({"accuracy"})
ArmStats = Moments | Bernoulli
# Outputs left out of the drift sample. A tuple: ``dict | list`` in the isinstance call
# would build a union type for every prediction event.
_NOT_SAMPLED = (dict, list)


def _output_row(output: Any) -> dict[str, Any]:
    return {"output": output}


def _merge_into(mine: dict[Any, Any], theirs: dict[Any, Any]) -> None:
    for key, acc in theirs.items():
        if key in mine:
            mine[key].merge(acc)
        else:
            mine[key] = acc.copy()


class _Lane:
    """The accumulators a prediction event of one (mode, arm, step, traffic fraction)
    updates, found with one lookup: a memo of :class:`RolloutEvidence`, never pickled.
    The accumulators live in the evidence's tables (a lane only refers to them); the
    samples are looked up when first needed, as the evidence creates them only then.

    Counting for the SRM test (``ratio``: None without a step and traffic fraction)
    follows how the router emits events. Canary: each request is routed to one arm; a
    challenger that fails falls back to the champion, which then emits its own event.
    So a request is a champion event, or a successful challenger event, or a failed
    challenger event plus its champion fallback (counted once, at the fallback).
    Shadow: the champion answers every request and only its successful answers are
    mirrored, so a request is a successful champion event; a challenger event marks
    it as mirrored. A unit id counts the unit once instead (see :class:`RatioCounts`).
    """

    __slots__ = (
        "calls", "canary", "challenger", "inputs", "moments", "outputs", "ratio", "sketch",
    )  # fmt: skip

    def __init__(
        self,
        mode: Mode,
        arm: Arm,
        calls: Bernoulli,
        moments: Moments,
        sketch: LogHistogram,
        ratio: RatioCounts | None,
    ) -> None:
        self.canary = mode is Mode.CANARY
        self.challenger = arm is Arm.CHALLENGER
        self.calls = calls
        self.moments = moments
        self.sketch = sketch
        self.ratio = ratio
        self.inputs: Reservoir | None = None
        self.outputs: Reservoir | None = None


class RolloutEvidence:
    """Everything observed about one rollout, as mergeable, picklable accumulators."""

    def __init__(
        self,
        sketch_accuracy: float = 0.01,
        sample_size: int = 1000,
        max_units_per_step: int = 200_000,
    ) -> None:
        self.sketch_accuracy = sketch_accuracy
        self.sample_size = sample_size
        self.max_units_per_step = max_units_per_step
        self._calls: dict[tuple[Mode, Arm, int], Bernoulli] = {}
        self._latency_moments: dict[tuple[Mode, Arm, int], Moments] = {}
        self._latency: dict[tuple[Mode, Arm], LogHistogram] = {}
        self._two_sample: dict[tuple[str, Arm, int], ArmStats] = {}
        self._paired: dict[tuple[str, int], CoMoments] = {}
        self._ratio: dict[tuple[int, Mode, float], RatioCounts] = {}
        self._inputs: dict[tuple[Mode, Arm], Reservoir] = {}
        self._outputs: dict[tuple[Mode, Arm], Reservoir] = {}
        self.requests_joined = 0
        self.requests_without_outcome = 0
        self._slo = SloWindows()
        self.drift_cache: dict[Any, Any] = {}  # memo of the judge, not evidence: never merged
        self._lanes: dict[tuple[Any, ...], _Lane] = {}  # memo of observe_prediction
        self._arm_lanes: dict[tuple[Arm, int], dict[str, ArmStats]] = {}  # of observe_request

    # ------------------------------------------------------------------ observing events

    def observe_prediction(self, p: PredictionEvent) -> RolloutEvidence:
        # Runs for every prediction event: the accumulators it updates are found with one
        # lookup (a _Lane), the sample hash is computed once, and the sampled row is
        # built only if a sample keeps it. Counting for the SRM test follows the router's
        # events (see _Lane).
        lane = self._lanes.get((p.mode, p.arm, p.step, p.traffic_fraction))
        if lane is None:
            lane = self._lane(p.mode, p.arm, p.step, p.traffic_fraction)
        error = p.error
        failed = error is not None
        lane.calls.update(failed)
        latency = p.latency_ms
        if type(latency) is not float or latency < 0.0:  # decoded events hold floats >= 0
            latency = max(float(latency), 0.0)
        lane.moments.update(latency)
        lane.sketch.update(latency)
        self._slo.observe(p)
        ratio = lane.ratio
        if ratio is not None:
            if lane.challenger:
                if p.unit_id is not None:
                    ratio.observe_unit(p.unit_id, True)
                elif lane.canary:
                    ratio.add(1, 0 if failed else 1)
                else:
                    ratio.add(1, 0)
            elif not failed or lane.canary:  # a failed champion in shadow: no mirror
                if p.unit_id is not None:
                    ratio.observe_unit(p.unit_id, False)
                else:
                    ratio.add(0, 1)
        output = None
        if not failed:
            output = p.score if p.score is not None else p.prediction
            if isinstance(output, _NOT_SAMPLED):
                output = None
        features = p.features
        if features or output is not None:
            request_id = p.request_id
            sample = sample_key(request_id)
            if features:
                inputs = lane.inputs
                if inputs is None:
                    inputs = lane.inputs = self._reservoir(self._inputs, p.mode, p.arm)
                inputs.offer(request_id, sample, dict, features)
            if output is not None:
                outputs = lane.outputs
                if outputs is None:
                    outputs = lane.outputs = self._reservoir(self._outputs, p.mode, p.arm)
                outputs.offer(request_id, sample, _output_row, output)
        return self

    def _lane(self, mode: Mode, arm: Arm, step: int | None, fraction: float | None) -> _Lane:
        key = (mode, arm, step if step is not None else NO_STEP)
        calls = self._calls.get(key)
        if calls is None:
            calls = self._calls[key] = Bernoulli()
        moments = self._latency_moments.get(key)
        if moments is None:
            moments = self._latency_moments[key] = Moments()
        ratio = None
        if fraction is not None and step is not None:
            ratio_key = (step, mode, float(fraction))
            ratio = self._ratio.get(ratio_key)
            if ratio is None:
                ratio = self._ratio[ratio_key] = RatioCounts(self.max_units_per_step)
        lane = _Lane(mode, arm, calls, moments, self._sketch(mode, arm), ratio)
        self._lanes[(mode, arm, step, fraction)] = lane
        return lane

    def observe_request(self, j: JoinedRequest) -> RolloutEvidence:
        if j.outcome is None:
            self.requests_without_outcome += 1
            return self
        self.requests_joined += 1
        parts = request_parts(j)
        if parts is None:
            return self
        step, arm, values = parts
        if arm is not None:  # canary: the routed arm's values
            # The accumulators of (arm, step) by metric: a memo of _two_sample, one
            # lookup per request instead of one per metric.
            stats = self._arm_lanes.get((arm, step))
            if stats is None:
                stats = self._arm_lanes[(arm, step)] = {}
            for metric, x in values.items():
                acc = stats.get(metric)
                if acc is None:
                    acc = stats[metric] = self._arm_stats(metric, arm, step)
                acc.update(x)
        else:  # shadow: (challenger, champion) pairs
            paired = self._paired
            for metric, (x, y) in values.items():
                acc = paired.get((metric, step))
                if acc is None:
                    acc = paired[(metric, step)] = CoMoments()
                acc.update(x, y)
        return self

    # ------------------------------------------------------------ bulk (replay, simulation)

    def add_predictions(
        self,
        arm: Arm,
        mode: Mode,
        latencies_ms: ArrayLike,
        errors: ArrayLike | None = None,
        step: int = 0,
        traffic_fraction: float | None = None,
        times_s: ArrayLike | None = None,
    ) -> RolloutEvidence:
        """Many prediction events of one arm without unit ids or features, counted for
        the SRM test like :meth:`observe_prediction` counts them; with ``times_s`` (epoch
        seconds of the calls) counted for the SLO gate too."""
        lat = np.maximum(np.asarray(latencies_ms, dtype=float).ravel(), 0.0)
        err = np.zeros(lat.size, bool) if errors is None else np.asarray(errors, bool).ravel()
        key = (mode, arm, step)
        self._calls.setdefault(key, Bernoulli()).update_many(err)
        self._latency_moments.setdefault(key, Moments()).update_many(lat)
        self._sketch(mode, arm).update_many(lat)
        if times_s is not None:
            self._slo.add_many(arm, np.asarray(times_s, dtype=float).ravel(), err, lat)
        if traffic_fraction is not None:
            counts = self._ratio.setdefault(
                (step, mode, float(traffic_fraction)), RatioCounts(self.max_units_per_step)
            )
            failures = int(err.sum())
            if arm is Arm.CHALLENGER:
                counts.add(lat.size, lat.size - failures if mode is Mode.CANARY else 0)
            else:
                counts.add(0, lat.size if mode is Mode.CANARY else lat.size - failures)
        return self

    def add_metric(
        self, metric: str, arm: Arm, values: ArrayLike, step: int = 0
    ) -> RolloutEvidence:
        """Canary: many values of one metric for the requests routed to ``arm``."""
        self._arm_stats(metric, arm, step).update_many(values)
        self.requests_joined += int(np.asarray(values).size)
        return self

    def add_paired(
        self, metric: str, challenger: ArrayLike, champion: ArrayLike, step: int = 0
    ) -> RolloutEvidence:
        """Shadow: values of one metric for requests both arms answered."""
        self._paired.setdefault((metric, step), CoMoments()).update_many(challenger, champion)
        self.requests_joined += int(np.asarray(challenger).size)
        return self

    def observations(self) -> int:
        """Calls observed plus requests joined or expired: grows with every event taken."""
        calls = sum(b.n for b in self._calls.values())
        return calls + self.requests_joined + self.requests_without_outcome

    # ----------------------------------------------------------------------------- merge

    def merge(self, other: RolloutEvidence) -> RolloutEvidence:
        """Fold ``other`` into this evidence (in place) and return self."""
        _merge_into(self._calls, other._calls)
        _merge_into(self._latency_moments, other._latency_moments)
        _merge_into(self._latency, other._latency)
        _merge_into(self._two_sample, other._two_sample)
        _merge_into(self._paired, other._paired)
        for key, counts in other._ratio.items():
            self._ratio.setdefault(key, RatioCounts(self.max_units_per_step)).merge(counts)
        for mine, theirs in ((self._inputs, other._inputs), (self._outputs, other._outputs)):
            for key, res in theirs.items():
                mine.setdefault(key, Reservoir(self.sample_size)).merge(res)
        self.requests_joined += other.requests_joined
        self.requests_without_outcome += other.requests_without_outcome
        self._slo.merge(other._slo)
        self.drift_cache.clear()
        self._lanes.clear()
        self._arm_lanes.clear()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["drift_cache"] = {}
        del state["_lanes"], state["_arm_lanes"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_slo", SloWindows())  # a snapshot written before the SLO gate
        self.__dict__.update(state)
        self._lanes, self._arm_lanes = {}, {}

    # ------------------------------------------------------------------ reading (judge)

    def arm_strata(self, metric: str, mode: Mode) -> dict[int, tuple[ArmStats, ArmStats]]:
        """Two-sample data per step: (challenger, champion) statistics of ``metric``.
        Quality metrics and KPIs come from canary requests; ``error_rate`` and
        ``latency_mean`` from the prediction events of ``mode``."""
        if metric == "error_rate":
            return self._by_step(self._calls, mode)
        if metric == "latency_mean":
            return self._by_step(self._latency_moments, mode)
        if mode is not Mode.CANARY:
            return {}
        steps = {s for (m, _, s) in self._two_sample if m == metric}
        out: dict[int, tuple[ArmStats, ArmStats]] = {}
        for step in sorted(steps):
            c = self._two_sample.get((metric, Arm.CHALLENGER, step))
            o = self._two_sample.get((metric, Arm.CHAMPION, step))
            if c is not None and o is not None:
                out[step] = (c, o)
        return out

    def paired_strata(self, metric: str) -> dict[int, CoMoments]:
        """Shadow data per step: co-moments of (challenger, champion) values."""
        return {s: cm for (m, s), cm in sorted(self._paired.items()) if m == metric}

    def arm_count(self, metric: str, arm: Arm, mode: Mode | None = None) -> int:
        if metric in ("error_rate", "latency_mean"):
            return sum(
                b.n for (md, a, _), b in self._calls.items() if a is arm and mode in (None, md)
            )
        return sum(s.n for (m, a, _), s in self._two_sample.items() if m == metric and a is arm)

    def slo_windows(self) -> SloWindows:
        """Each arm's calls per 5 s of event time, for the SLO burn-rate gate."""
        return self._slo

    def latency_sketch(self, mode: Mode, arm: Arm) -> LogHistogram:
        return self._latency.get((mode, arm)) or LogHistogram(self.sketch_accuracy)

    def predictions(self, arm: Arm, step: int | None = None) -> int:
        """Prediction events of ``arm`` (in one step, or in all)."""
        return sum(b.n for (_, a, s), b in self._calls.items() if a is arm and step in (None, s))

    def ratio_strata(self) -> dict[str, tuple[float, RatioCounts]]:
        return {
            f"step {step} {mode.value} {fraction:g}": (fraction, counts)
            for (step, mode, fraction), counts in sorted(self._ratio.items())
        }

    def inputs(self, mode: Mode, arm: Arm) -> Reservoir:
        return self._inputs.get((mode, arm)) or Reservoir(self.sample_size)

    def outputs(self, mode: Mode, arm: Arm) -> Reservoir:
        return self._outputs.get((mode, arm)) or Reservoir(self.sample_size)

    def summary(self) -> dict[str, Any]:
        """Sample counts for the judgement's evidence."""
        return {
            "predictions": {arm.value: self.predictions(arm) for arm in Arm},
            "errors": {
                arm.value: sum(b.successes for (_, a, _), b in self._calls.items() if a is arm)
                for arm in Arm
            },
            "requests_joined": self.requests_joined,
            "requests_without_outcome": self.requests_without_outcome,
            "steps_seen": sorted({s for (_, _, s) in self._calls if s != NO_STEP}),
        }

    # ---------------------------------------------------------------------------- helpers

    def _by_step(
        self, table: dict[tuple[Mode, Arm, int], Any], mode: Mode
    ) -> dict[int, tuple[Any, Any]]:
        steps = sorted({s for (md, _, s) in table if md is mode})
        out = {}
        for step in steps:
            c, o = table.get((mode, Arm.CHALLENGER, step)), table.get((mode, Arm.CHAMPION, step))
            if c is not None and o is not None:
                out[step] = (c, o)
        return out

    def _arm_stats(self, metric: str, arm: Arm, step: int) -> ArmStats:
        key = (metric, arm, step)
        acc = self._two_sample.get(key)
        if acc is None:
            acc = self._two_sample[key] = Bernoulli() if metric in BINARY_METRICS else Moments()
        return acc

    def _sketch(self, mode: Mode, arm: Arm) -> LogHistogram:
        sketch = self._latency.get((mode, arm))
        if sketch is None:
            sketch = self._latency[(mode, arm)] = LogHistogram(self.sketch_accuracy)
        return sketch

    def _reservoir(
        self, table: dict[tuple[Mode, Arm], Reservoir], mode: Mode, arm: Arm
    ) -> Reservoir:
        res = table.get((mode, arm))
        if res is None:
            res = table[(mode, arm)] = Reservoir(self.sample_size)
        return res

    @staticmethod
    def merged(parts: Iterable[RolloutEvidence]) -> RolloutEvidence:
        out = RolloutEvidence()
        for part in parts:
            out.merge(part)
        return out
