"""Decision quality of the judge vs a Kayenta-style test repeated at every interval.

    python benchmarks/decision_quality.py --trials 500 --json decision_quality.json

Simulates rollouts in memory (no I/O) and reports, side by side in one run:

- ``aa_false_rollback_rate``: challenger identical to the champion (accuracy 0.90 both),
  judged at every look up to the horizon; the share of rollouts rolled back.
- ``accuracy_drop``: accuracy 0.90 -> 0.87 in canary mode (50/50 split). The fixed
  horizon for this effect is 1,398 per arm (one-sided alpha = 0.05, power 0.8).
- ``latency_regression``: latencies lognormal (median 20 ms, sigma 0.4); the challenger's
  are 30% slower (p95 +30%); the gate tolerates +10% on p95.
- ``shadow_accuracy_drop`` (ours only): the accuracy drop in shadow mode, paired: both
  models answer the same requests; the challenger is right on 30% of the champion's
  mistakes and wrong on enough of its successes to average 0.87.

``ours`` runs the real judge: every look adds the new samples to a
:class:`~modelcanary.judge.RolloutEvidence` (bulk) and calls
:func:`~modelcanary.judge.judge` with a one-gate policy whose ``design_samples`` is the
scenario's fixed-horizon n (the same design information the fixed-horizon test gets).
``kayenta_style`` re-runs a fixed-sample test at alpha at every look on all data so far:
a one-sided two-proportion z-test for accuracy, a one-sided Mann-Whitney U test of
``challenger / (1 + margin)`` against the champion for latency (Kayenta's classifier is
Mann-Whitney). Samples are counted per arm at the look that rolled back; the mean and
median are over the rollouts that rolled back within the horizon (``horizon_factor`` x
the fixed-horizon n). Vectorised over trials where the baseline allows; the judge is
called once per look per trial.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import stats

from modelcanary.events import Action, Arm, Mode
from modelcanary.judge import JudgeContext, RolloutEvidence, judge
from modelcanary.policy import (
    Direction,
    DriftSettings,
    Gate,
    MarginType,
    Policy,
    SrmSettings,
    Step,
)

ALPHA = 0.05
POWER = 0.8
P_CHAMPION, P_DROP = 0.90, 0.87
LATENCY_MEDIAN_MS, LATENCY_SIGMA, LATENCY_SLOWDOWN, LATENCY_MARGIN = 20.0, 0.4, 1.30, 0.10
SHADOW_RESCUE = 0.30  # P(challenger right | champion wrong) in the shadow scenario
_Z = NormalDist()


def accuracy_fixed_horizon(p0: float, p1: float, alpha: float, power: float) -> int:
    """Per-arm n of a one-sided two-proportion z-test (pooled variance under H0)."""
    za, zb = _Z.inv_cdf(1 - alpha), _Z.inv_cdf(power)
    pbar = (p0 + p1) / 2
    num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return math.ceil((num / (p0 - p1)) ** 2)


def latency_fixed_horizon(alpha: float, power: float, q: float = 0.95) -> int:
    """Per-arm n of a one-sided test of log p95 (challenger) - log p95 (champion) against
    log(1 + margin), using the sample quantile's asymptotic variance for a lognormal:
    Var(log q_hat) = sigma^2 q (1 - q) / (n phi(z_q)^2)."""
    za, zb = _Z.inv_cdf(1 - alpha), _Z.inv_cdf(power)
    zq = _Z.inv_cdf(q)
    var1 = LATENCY_SIGMA**2 * q * (1 - q) / _Z.pdf(zq) ** 2
    effect = math.log(LATENCY_SLOWDOWN) - math.log(1 + LATENCY_MARGIN)
    return math.ceil((za + zb) ** 2 * 2 * var1 / effect**2)


def one_step_policy(gate: Gate, design_samples: int) -> Policy:
    return Policy(
        steps=(Step(0.5, min_samples=0, min_duration_s=0.0, max_duration_s=1e15),),
        gates=(gate,),
        alpha=ALPHA,
        design_samples=design_samples,
        srm=SrmSettings(enabled=False),
        drift=DriftSettings(enabled=False),
    )


def accuracy_policy(n_fh: int, modes: tuple[Mode, ...] = (Mode.CANARY,)) -> Policy:
    policy = one_step_policy(Gate("accuracy", Direction.HIGHER_IS_BETTER, margin=0.0), n_fh)
    if Mode.SHADOW in modes:
        shadow = Step(0.5, mode=Mode.SHADOW, min_samples=0, max_duration_s=1e15)
        return Policy(
            steps=(shadow,),
            gates=policy.gates,
            alpha=ALPHA,
            design_samples=n_fh,
            srm=policy.srm,
            drift=policy.drift,
        )
    return policy


def latency_policy(n_fh: int) -> Policy:
    gate = Gate(
        "latency_p95",
        Direction.LOWER_IS_BETTER,
        margin=LATENCY_MARGIN,
        margin_type=MarginType.RELATIVE,
    )
    return one_step_policy(gate, n_fh)


@dataclass(frozen=True)
class Scenario:
    """Samples per trial: (challenger, champion) arrays of shape (trials, horizon)."""

    name: str
    fixed_horizon_n: int
    horizon: int
    sample: Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]


def run_ours(
    policy: Policy,
    feed: Callable[[RolloutEvidence, np.ndarray, np.ndarray], None],
    chal: np.ndarray,
    champ: np.ndarray,
    look_every: int,
) -> np.ndarray:
    """Samples per arm at the first ROLLBACK of each trial (NaN if none)."""
    trials, horizon = chal.shape
    out = np.full(trials, np.nan)
    for i in range(trials):
        evidence = RolloutEvidence()
        for k, end in enumerate(range(look_every, horizon + 1, look_every), start=1):
            feed(evidence, chal[i, end - look_every : end], champ[i, end - look_every : end])
            j = judge(policy, evidence, JudgeContext("bench", 0, 0.0, float(k)))
            if j.action is Action.ROLLBACK:
                out[i] = end
                break
    return out


def feed_canary_accuracy(ev: RolloutEvidence, c: np.ndarray, o: np.ndarray) -> None:
    ev.add_metric("accuracy", Arm.CHALLENGER, c)
    ev.add_metric("accuracy", Arm.CHAMPION, o)


def feed_shadow_accuracy(ev: RolloutEvidence, c: np.ndarray, o: np.ndarray) -> None:
    ev.add_paired("accuracy", c, o)


def feed_latency(ev: RolloutEvidence, c: np.ndarray, o: np.ndarray) -> None:
    ev.add_predictions(Arm.CHALLENGER, Mode.CANARY, c)
    ev.add_predictions(Arm.CHAMPION, Mode.CANARY, o)


def kayenta_accuracy(chal: np.ndarray, champ: np.ndarray, look_every: int) -> np.ndarray:
    """First look at which a one-sided pooled z-test rejects 'challenger >= champion'."""
    ends = np.arange(look_every, chal.shape[1] + 1, look_every)
    sc = np.cumsum(chal, axis=1)[:, ends - 1]
    so = np.cumsum(champ, axis=1)[:, ends - 1]
    n = ends[None, :].astype(float)
    pc, po = sc / n, so / n
    pbar = (sc + so) / (2 * n)
    se = np.sqrt(np.maximum(pbar * (1 - pbar) * 2 / n, 1e-300))
    reject = (po - pc) / se > _Z.inv_cdf(1 - ALPHA)
    return _first(reject, ends)


def kayenta_latency(chal: np.ndarray, champ: np.ndarray, look_every: int) -> np.ndarray:
    """First look at which a one-sided Mann-Whitney U test finds the challenger, scaled
    down by the margin, stochastically slower than the champion."""
    ends = np.arange(look_every, chal.shape[1] + 1, look_every)
    reject = np.zeros((chal.shape[0], ends.size), bool)
    scaled = chal / (1 + LATENCY_MARGIN)
    for k, end in enumerate(ends):
        res = stats.mannwhitneyu(scaled[:, :end], champ[:, :end], axis=1, alternative="greater")
        reject[:, k] = res.pvalue < ALPHA
    return _first(reject, ends)


def _first(reject: np.ndarray, ends: np.ndarray) -> np.ndarray:
    any_ = reject.any(axis=1)
    first = np.where(any_, ends[np.argmax(reject, axis=1)], np.nan).astype(float)
    return first


def summarise(samples: np.ndarray, fixed_horizon_n: int) -> dict[str, Any]:
    hit = samples[~np.isnan(samples)]
    mean = float(hit.mean()) if hit.size else None
    return {
        "detection_rate": float(hit.size / samples.size),
        "mean_samples_per_arm": mean,
        "median_samples_per_arm": float(np.median(hit)) if hit.size else None,
        "ratio_to_fixed_horizon": None if mean is None else mean / fixed_horizon_n,
    }


def bernoulli_pair(p_chal: float, p_champ: float) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    def sample(
        rng: np.random.Generator, trials: int, horizon: int
    ) -> tuple[np.ndarray, np.ndarray]:
        c = (rng.random((trials, horizon)) < p_chal).astype(float)
        o = (rng.random((trials, horizon)) < p_champ).astype(float)
        return c, o

    return sample


def shadow_pair(
    rng: np.random.Generator, trials: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    champ = rng.random((trials, horizon)) < P_CHAMPION
    keep = (P_DROP - (1 - P_CHAMPION) * SHADOW_RESCUE) / P_CHAMPION  # P(right | champion right)
    u = rng.random((trials, horizon))
    chal = np.where(champ, u < keep, u < SHADOW_RESCUE)
    return chal.astype(float), champ.astype(float)


def latency_pair(slowdown: float) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    def sample(
        rng: np.random.Generator, trials: int, horizon: int
    ) -> tuple[np.ndarray, np.ndarray]:
        mu = math.log(LATENCY_MEDIAN_MS)
        c = slowdown * rng.lognormal(mu, LATENCY_SIGMA, (trials, horizon))
        o = rng.lognormal(mu, LATENCY_SIGMA, (trials, horizon))
        return c, o

    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--look-every", type=int, default=10, help="samples per arm per look")
    parser.add_argument("--horizon-factor", type=float, default=4.0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()

    n_acc = accuracy_fixed_horizon(P_CHAMPION, P_DROP, ALPHA, POWER)
    n_lat = latency_fixed_horizon(ALPHA, POWER)
    look = args.look_every

    def horizon(n: int) -> int:
        return int(math.ceil(args.horizon_factor * n / look) * look)

    acc_policy, lat_policy = accuracy_policy(n_acc), latency_policy(n_lat)
    shadow_policy = accuracy_policy(n_acc, (Mode.SHADOW,))
    results: dict[str, dict[str, Any]] = {"ours": {}, "kayenta_style": {}}
    timings: dict[str, float] = {}

    def scenario(
        name: str, sampler: Callable[..., Any], n_fh: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return sampler(rng, args.trials, horizon(n_fh))

    # A/A: identical accuracy, monitored to the horizon.
    t = time.perf_counter()
    c, o = scenario("aa", bernoulli_pair(P_CHAMPION, P_CHAMPION), n_acc)
    ours = run_ours(acc_policy, feed_canary_accuracy, c, o, look)
    kay = kayenta_accuracy(c, o, look)
    results["ours"]["aa_false_rollback_rate"] = float(np.mean(~np.isnan(ours)))
    results["kayenta_style"]["aa_false_rollback_rate"] = float(np.mean(~np.isnan(kay)))
    timings["aa"] = time.perf_counter() - t

    t = time.perf_counter()
    c, o = scenario("accuracy_drop", bernoulli_pair(P_DROP, P_CHAMPION), n_acc)
    results["ours"]["accuracy_drop"] = summarise(
        run_ours(acc_policy, feed_canary_accuracy, c, o, look), n_acc
    )
    results["kayenta_style"]["accuracy_drop"] = summarise(kayenta_accuracy(c, o, look), n_acc)
    timings["accuracy_drop"] = time.perf_counter() - t

    t = time.perf_counter()
    c, o = scenario("shadow_accuracy_drop", shadow_pair, n_acc)
    results["ours"]["shadow_accuracy_drop"] = summarise(
        run_ours(shadow_policy, feed_shadow_accuracy, c, o, look), n_acc
    )
    timings["shadow_accuracy_drop"] = time.perf_counter() - t

    t = time.perf_counter()
    c, o = scenario("latency_regression", latency_pair(LATENCY_SLOWDOWN), n_lat)
    results["ours"]["latency_regression"] = summarise(
        run_ours(lat_policy, feed_latency, c, o, look), n_lat
    )
    results["kayenta_style"]["latency_regression"] = summarise(kayenta_latency(c, o, look), n_lat)
    timings["latency_regression"] = time.perf_counter() - t

    t = time.perf_counter()
    c, o = scenario("latency_aa", latency_pair(1.0), n_lat)
    results["ours"]["aa_latency_false_rollback_rate"] = float(
        np.mean(~np.isnan(run_ours(lat_policy, feed_latency, c, o, look)))
    )
    results["kayenta_style"]["aa_latency_false_rollback_rate"] = float(
        np.mean(~np.isnan(kayenta_latency(c, o, look)))
    )
    timings["latency_aa"] = time.perf_counter() - t

    out = {
        "alpha": ALPHA,
        "trials": args.trials,
        "fixed_horizon_n": n_acc,
        "ours": results["ours"],
        "kayenta_style": results["kayenta_style"],
        "setup": {
            "seed": args.seed,
            "look_every_samples_per_arm": look,
            "horizon_factor": args.horizon_factor,
            "accuracy": {
                "champion": P_CHAMPION,
                "challenger": P_DROP,
                "fixed_horizon_n": n_acc,
                "horizon_samples_per_arm": horizon(n_acc),
                "canary_split": 0.5,
                "shadow": f"paired; challenger right on {SHADOW_RESCUE:.0%} of the champion's "
                "mistakes",
            },
            "latency_regression": {
                "champion": f"lognormal, median {LATENCY_MEDIAN_MS:g} ms, sigma {LATENCY_SIGMA:g}",
                "challenger": f"champion x {LATENCY_SLOWDOWN:g} (p95 +{LATENCY_SLOWDOWN - 1:.0%})",
                "gate": f"latency_p95 relative margin +{LATENCY_MARGIN:.0%}",
                "fixed_horizon_n": n_lat,
                "fixed_horizon_test": "one-sided z-test of log p95 difference vs log(1.1), "
                "asymptotic quantile variance",
                "horizon_samples_per_arm": horizon(n_lat),
            },
            "ours": "modelcanary.judge.judge, one-gate policy, design_samples = fixed-horizon n, "
            "alpha 0.05, srm and drift off",
            "kayenta_style": "fixed-sample test at alpha 0.05 re-run at every look: one-sided "
            "two-proportion z-test (accuracy), one-sided Mann-Whitney U on challenger/1.1 vs "
            "champion (latency)",
            "seconds": {k: round(v, 1) for k, v in timings.items()}
            | {"total": round(time.perf_counter() - t0, 1)},
        },
    }
    text = json.dumps(out, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
