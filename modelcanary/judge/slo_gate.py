"""The SLO burn-rate gate: halt a rollout whose challenger burns an error budget too fast.

For each objective of the policy's ``slos`` (availability: calls without error;
latency: calls within ``threshold_ms``) and each burn-rate window pair (long, short,
max_multiple), with ``limit = max_multiple * (1 - objective)``:

- **burning** (the judge halts): the long window holds at least ``min_calls`` of the
  challenger's calls and the anytime-valid test of :mod:`modelcanary.stats.burn_rate`
  shows its bad share above ``limit``, and the short window's bad share is above
  ``limit`` at face value (the burn is still going on: the SRE workbook's multiwindow
  rule, which stops alerting soon after a burn ends);
- **watch**: both windows above the limit at face value, not shown yet;
- **ok**: otherwise; **no data**: fewer than ``min_calls`` in the long window;
- **error**: evaluating it raised (the judge goes on).

Only the long window's test spends alpha (the short window can only make the gate
fire less often). The gate's share of alpha is spread over the window positions of
the rollout (:func:`~modelcanary.stats.burn_rate.look_alpha`) and split evenly among
the objectives and window pairs, so a challenger that never burns faster than a limit
is halted by this gate with probability at most that share over the whole rollout.

Windows end at the newest 5 s bucket holding a call of the rollout, but never after the
judge's clock: the lag of the pipeline does not empty the short window, and a router
whose clock runs ahead cannot push the windows into the future. The champion's burn
rates over the same windows are reported for context (is the whole service burning, or
only the challenger?); they never halt anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelcanary.events import Arm
from modelcanary.judge.slo_windows import SloWindows
from modelcanary.judge.verdicts import finite
from modelcanary.policy import SLO_BUCKET_S, BurnWindow, LatencySlo, Policy, SloSettings
from modelcanary.stats.burn_rate import log_evalue, look_alpha, lower_bound
from modelcanary.stats.windowed import WindowedCounts


class BurnVerdict(StrEnum):
    BURNING = "burning"
    WATCH = "watch"
    OK = "ok"
    NO_DATA = "no_data"
    ERROR = "error"


@dataclass(frozen=True)
class WindowCount:
    """One arm's calls in one window, and how many of them were bad for the SLO."""

    seconds: int
    calls: int
    bad: int

    @property
    def good_share(self) -> float | None:
        return 1.0 - self.bad / self.calls if self.calls else None

    def burn_rate(self, budget: float) -> float | None:
        return self.bad / self.calls / budget if self.calls else None

    def to_dict(self, budget: float) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "calls": self.calls,
            "bad": self.bad,
            "good_share": self.good_share,
            "burn_rate": self.burn_rate(budget),
        }


@dataclass(frozen=True)
class WindowBurn:
    """The verdict of one window pair of one objective, with the numbers behind it."""

    window: BurnWindow
    budget: float  # 1 - objective
    verdict: BurnVerdict
    long: WindowCount
    short: WindowCount
    champion_long: WindowCount
    champion_short: WindowCount
    log_evalue: float | None = None
    threshold_log_evalue: float | None = None
    burn_rate_lower: float | None = None

    @property
    def limit(self) -> float:
        return self.window.max_multiple * self.budget

    def to_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "long_s": self.window.long_s,
            "short_s": self.window.short_s,
            "max_multiple": self.window.max_multiple,
            "limit": self.limit,
            "verdict": self.verdict.value,
            "burn_rate": finite(self.long.burn_rate(b)),
            "burn_rate_lower": finite(self.burn_rate_lower),
            "short_burn_rate": finite(self.short.burn_rate(b)),
            "log_evalue": finite(self.log_evalue),
            "threshold_log_evalue": finite(self.threshold_log_evalue),
            "challenger": {"long": self.long.to_dict(b), "short": self.short.to_dict(b)},
            "champion": {
                "long": self.champion_long.to_dict(b),
                "short": self.champion_short.to_dict(b),
            },
        }


@dataclass(frozen=True)
class SloVerdict:
    """One objective's verdict: the worst of its window pairs."""

    slo: str
    objective: float
    threshold_ms: float | None
    verdict: BurnVerdict
    reason: str
    windows: tuple[WindowBurn, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "objective": self.objective,
            "threshold_ms": self.threshold_ms,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "windows": [w.to_dict() for w in self.windows],
        }


@dataclass(frozen=True)
class SloResult:
    """Every objective's verdict at one look, and the alpha each test was run at."""

    alpha: float  # the gate's share of alpha for the whole rollout
    test_alpha: float  # the level of each long-window test at this look
    position: int  # window position: 5 s buckets since the rollout's first call
    positions_planned: int
    end_bucket: int | None
    verdicts: tuple[SloVerdict, ...] = field(default_factory=tuple)
    unparsed_ts: int = 0

    @property
    def burning(self) -> tuple[SloVerdict, ...]:
        return tuple(v for v in self.verdicts if v.verdict is BurnVerdict.BURNING)

    def sentence(self) -> str:
        """The halt reason: every burning objective, the first burning window pair each."""
        return "; ".join(v.reason for v in self.burning)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "test_alpha": self.test_alpha,
            "threshold_log_evalue": math.log(1.0 / self.test_alpha) if self.test_alpha else None,
            "position": self.position,
            "positions_planned": self.positions_planned,
            "bucket_s": SLO_BUCKET_S,
            "window_end_ts": None if self.end_bucket is None else self.end_bucket * SLO_BUCKET_S,
            "burning": bool(self.burning),
            "objectives": [v.to_dict() for v in self.verdicts],
            "unparsed_ts": self.unparsed_ts,
        }


def evaluate_slos(policy: Policy, windows: SloWindows, now: float) -> SloResult | None:
    """The policy's SLO verdicts at time ``now`` (epoch s); None without ``slos``."""
    settings = policy.slos
    if settings is None:
        return None
    challenger, champion = windows.arm(Arm.CHALLENGER), windows.arm(Arm.CHAMPION)
    planned = max(math.ceil(policy.planned_duration_s / SLO_BUCKET_S), 1)
    end = _end_bucket(challenger, champion, now)
    firsts = [b for b in (challenger.first_bucket, champion.first_bucket) if b is not None]
    position = end - min(firsts) if end is not None and firsts else 0
    tests = len(settings.objectives) * len(settings.burn_rate.windows)
    look = _Look(
        challenger, champion, end, look_alpha(policy.slo_alpha, position, planned) / tests,
        settings.burn_rate.min_calls,
    )  # fmt: skip
    verdicts = tuple(
        _objective(name, slo, settings, look, policy.slo_alpha) for name, slo in settings.objectives
    )
    return SloResult(
        policy.slo_alpha, look.test_alpha, position, planned, end, verdicts, windows.unparsed
    )


@dataclass(frozen=True)
class _Look:
    """What every window pair of one look shares."""

    challenger: WindowedCounts
    champion: WindowedCounts
    end: int | None  # the bucket the windows end with
    test_alpha: float
    min_calls: int


def _end_bucket(a: WindowedCounts, b: WindowedCounts, now: float) -> int | None:
    newest = [x for x in (a.newest_bucket, b.newest_bucket) if x is not None]
    if not newest:
        return None
    return min(max(newest), a.bucket_of(now))


def _objective(
    name: str, slo: Any, settings: SloSettings, look: _Look, rollout_alpha: float
) -> SloVerdict:
    threshold = slo.threshold_ms if isinstance(slo, LatencySlo) else None
    try:
        burns = tuple(
            _pair(w, 1.0 - slo.objective, threshold, look) for w in settings.burn_rate.windows
        )
    except Exception as exc:  # a broken SLO must not stop the judge
        return SloVerdict(
            name, slo.objective, threshold, BurnVerdict.ERROR,
            f"SLO {name} could not be evaluated: {type(exc).__name__}: {exc}",
        )  # fmt: skip
    verdict = _worst(b.verdict for b in burns)
    shown = next((b for b in burns if b.verdict is verdict), None)
    reason = _reason(name, slo.objective, threshold, shown, rollout_alpha, settings)
    return SloVerdict(name, slo.objective, threshold, verdict, reason, burns)


def _worst(verdicts: Any) -> BurnVerdict:
    seen = set(verdicts)
    for v in (BurnVerdict.BURNING, BurnVerdict.WATCH, BurnVerdict.OK):
        if v in seen:
            return v
    return BurnVerdict.NO_DATA


def _count(
    acc: WindowedCounts, threshold_ms: float | None, end: int | None, seconds: int
) -> WindowCount:
    if end is None:
        return WindowCount(seconds, 0, 0)
    totals = acc.window(end, seconds)
    bad = totals.errors if threshold_ms is None else acc.slower_than(threshold_ms, end, seconds)
    return WindowCount(seconds, totals.calls, bad)


def _pair(w: BurnWindow, budget: float, threshold_ms: float | None, look: _Look) -> WindowBurn:
    long = _count(look.challenger, threshold_ms, look.end, w.long_s)
    short = _count(look.challenger, threshold_ms, look.end, w.short_s)
    context = (
        _count(look.champion, threshold_ms, look.end, w.long_s),
        _count(look.champion, threshold_ms, look.end, w.short_s),
    )
    if long.calls < look.min_calls:
        return WindowBurn(w, budget, BurnVerdict.NO_DATA, long, short, *context)
    limit = w.max_multiple * budget
    log_e = log_evalue(long.bad, long.calls, limit)
    threshold = math.log(1.0 / look.test_alpha)
    lower = lower_bound(long.bad, long.calls, look.test_alpha) / budget
    above_long = long.bad > limit * long.calls
    above_short = short.calls > 0 and short.bad > limit * short.calls
    if log_e >= threshold and above_short:
        verdict = BurnVerdict.BURNING
    elif above_long and above_short:
        verdict = BurnVerdict.WATCH
    else:
        verdict = BurnVerdict.OK
    return WindowBurn(w, budget, verdict, long, short, *context, log_e, threshold, lower)


# ------------------------------------------------------------------------------ wording


def _pct(share: float | None, budget: float) -> str:
    """A share as a percentage precise enough for its budget, never rounded up to 100%."""
    if share is None:
        return "no calls"
    decimals = max(1, math.ceil(-math.log10(budget)) - 2)
    text = f"{100.0 * share:.{decimals}f}"
    while share < 1.0 and text.startswith("100") and decimals < 6:
        decimals += 1
        text = f"{100.0 * share:.{decimals}f}"
    return f"{text}%"


def _times(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.0f}x" if x >= 100 else f"{x:.3g}x"


def _reason(
    name: str,
    objective: float,
    threshold_ms: float | None,
    b: WindowBurn | None,
    rollout_alpha: float,
    settings: SloSettings,
) -> str:
    sli = "availability" if threshold_ms is None else "latency"
    of_calls = "" if threshold_ms is None else f" of calls within {threshold_ms:g} ms"
    goal = f"objective {100.0 * objective:g}%"
    if b is None or b.verdict is BurnVerdict.NO_DATA:
        calls = 0 if b is None else b.long.calls
        return (
            f"challenger {sli}: {calls} calls in the long window, fewer than the "
            f"{settings.burn_rate.min_calls} needed ({goal})"
        )
    budget = b.budget
    long = (
        f"challenger {sli} {_pct(b.long.good_share, budget)}{of_calls} over the last "
        f"{b.window.long_s} s (burn rate {_times(b.long.burn_rate(budget))}"
    )
    if b.verdict is BurnVerdict.BURNING:
        long += (
            f", at least {_times(b.burn_rate_lower)} with {_confidence(rollout_alpha)} confidence)"
        )
    else:
        long += ")"
    short = f"{_pct(b.short.good_share, budget)} over the last {b.window.short_s} s"
    champion = (
        f"; champion {_pct(b.champion_long.good_share, budget)} "
        f"({_times(b.champion_long.burn_rate(budget))}) over the same {b.window.long_s} s"
        if b.champion_long.calls
        else ""
    )
    limit = f"the {_times(b.window.max_multiple)} limit of {goal}"
    if b.verdict is BurnVerdict.BURNING:
        return f"{long} and {short}, above {limit}{champion}"
    if b.verdict is BurnVerdict.WATCH:
        return f"{long} and {short} are above {limit}, not yet shown with confidence{champion}"
    return f"{long}, {short}: within {limit}{champion}"


def _confidence(alpha: float) -> str:
    text = f"{100.0 * (1.0 - alpha):.2f}".rstrip("0").rstrip(".")
    return f"{text}%"
