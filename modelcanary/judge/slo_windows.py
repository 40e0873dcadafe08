"""The SLO gate's evidence: each arm's calls per time bucket, from prediction events.

:class:`SloWindows` is one field of :class:`~modelcanary.judge.evidence.RolloutEvidence`:
it files every prediction event of a rollout under its arm and the 5 s bucket of its
``ts`` (the router's clock when it emitted the event) in a
:class:`~modelcanary.stats.windowed.WindowedCounts`, keeping an hour and five minutes
of buckets. Canary and shadow calls count alike: in shadow mode the challenger's
failures and latency are its own even though no user saw them.

Parsing ``ts`` is the only per-event cost beyond counting: events arrive in roughly
time order, so the epoch second of the last ``...Z`` timestamp's first 19 characters
(``YYYY-MM-DDTHH:MM:SS``) is kept and reused while they match. A ``ts`` that does not
parse is counted in ``unparsed`` and left out of the windows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelcanary.events import Arm, PredictionEvent
from modelcanary.policy import SLO_BUCKET_S, SLO_MAX_WINDOW_S
from modelcanary.stats.windowed import WindowedCounts

RETENTION_S = SLO_MAX_WINDOW_S + 300  # a margin for late events and the judge's lag


def _windows() -> WindowedCounts:
    return WindowedCounts(bucket_s=SLO_BUCKET_S, retention_s=RETENTION_S)


class SloWindows:
    """Per arm, calls, errors and latencies per ``SLO_BUCKET_S`` seconds; mergeable."""

    def __init__(self) -> None:
        self._arms: dict[Arm, WindowedCounts] = {arm: _windows() for arm in Arm}
        self.unparsed = 0
        self._head = ""  # memo of the last parsed "...Z" timestamp: first 19 chars -> second
        self._second = 0

    def observe(self, p: PredictionEvent) -> SloWindows:
        ts = p.ts
        # ts starts with the memo (19 characters, or none yet: "") and ends with "Z";
        # slices rather than method calls: this runs for every prediction event.
        if ts[:19] == self._head and ts[-1:] == "Z":
            second = self._second
        else:
            parsed = self._parse(ts)
            if parsed is None:
                self.unparsed += 1
                return self
            second = parsed
        self._arms[p.arm].update(second, p.error is not None, p.latency_ms)
        return self

    def _parse(self, ts: str) -> int | None:
        try:
            when = datetime.fromisoformat(ts)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        second = int(when.timestamp() // 1)
        if ts.endswith("Z") and len(ts) >= 20 and ts[19] in ".Z":
            self._head, self._second = ts[:19], second
        return second

    def add_many(self, arm: Arm, times_s: Any, errors: Any, latencies_ms: Any) -> SloWindows:
        """Bulk: calls of ``arm`` at epoch seconds ``times_s`` (sequences of equal length)."""
        acc = self._arms[arm]
        for t, e, x in zip(times_s, errors, latencies_ms, strict=True):
            acc.update(float(t), bool(e), float(x))
        return self

    def merge(self, other: SloWindows) -> SloWindows:
        for arm, acc in other._arms.items():
            self._arms[arm].merge(acc)
        self.unparsed += other.unparsed
        return self

    def arm(self, arm: Arm) -> WindowedCounts:
        return self._arms[arm]

    def __getstate__(self) -> dict[str, Any]:
        return {"arms": self._arms, "unparsed": self.unparsed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._arms, self.unparsed = state["arms"], state["unparsed"]
        self._head, self._second = "", 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SloWindows) and (self._arms, self.unparsed) == (
            other._arms,
            other.unparsed,
        )

    __hash__ = None  # type: ignore[assignment]
