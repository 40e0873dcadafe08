"""Traffic simulator: real HTTP requests to a serving endpoint, outcomes reported later.

Sends ``/predict`` calls at a target rate with rows drawn from a labelled dataset and
sticky unit ids; after a random delay (outcomes are late in real life) it reports the
true label through ``/feedback``. Used by the demo and the integration tests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    feedback_sent: int = 0
    feedback_failed: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def record_error(self, message: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(message)


@dataclass(frozen=True)
class TrafficConfig:
    rate_per_s: float = 150.0
    concurrency: int = 16
    units: int = 5_000
    outcome_delay_s: tuple[float, float] = (0.2, 2.0)
    late_fraction: float = 0.05
    late_delay_s: float = 8.0
    seed: int = 0


class TrafficSimulator:
    def __init__(
        self,
        base_url: str,
        rows: Sequence[dict[str, Any]],
        labels: Sequence[Any],
        config: TrafficConfig = TrafficConfig(),
    ) -> None:
        if len(rows) != len(labels) or not rows:
            raise ValueError("rows and labels must be non-empty and of equal length")
        self.base_url = base_url.rstrip("/")
        self.rows = rows
        self.labels = labels
        self.config = config
        self.stats = TrafficStats()
        self._rng = random.Random(config.seed)
        self._pending_feedback: set[asyncio.Task[None]] = set()

    async def run(
        self,
        until: Callable[[], bool],
        max_seconds: float,
        on_progress: Callable[[TrafficStats], None] | None = None,
    ) -> TrafficStats:
        """Send traffic until ``until()`` is true or ``max_seconds`` pass; then drain outcomes."""
        limits = httpx.Limits(max_connections=self.config.concurrency * 2)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10.0, limits=limits) as client:
            queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=self.config.concurrency * 4)
            workers = [
                asyncio.create_task(self._worker(client, queue))
                for _ in range(self.config.concurrency)
            ]
            started = time.monotonic()
            interval = 1.0 / self.config.rate_per_s
            next_send = started
            last_progress = 0.0
            while time.monotonic() - started < max_seconds and not until():
                await queue.put(self._rng.randrange(len(self.rows)))
                next_send += interval
                delay = next_send - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if on_progress is not None and time.monotonic() - last_progress > 0.5:
                    on_progress(self.stats)
                    last_progress = time.monotonic()
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
            if self._pending_feedback:
                await asyncio.gather(*self._pending_feedback, return_exceptions=True)
        return self.stats

    async def _worker(self, client: httpx.AsyncClient, queue: asyncio.Queue[int | None]) -> None:
        while (index := await queue.get()) is not None:
            unit = f"user-{self._rng.randrange(self.config.units)}"
            self.stats.sent += 1
            try:
                response = await client.post(
                    "/predict", json={"features": self.rows[index], "unit_id": unit}
                )
                response.raise_for_status()
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                self.stats.failed += 1
                self.stats.record_error(f"predict: {_describe(exc)}")
                continue
            self.stats.ok += 1
            version = str(body.get("version"))
            self.stats.by_version[version] = self.stats.by_version.get(version, 0) + 1
            task = asyncio.create_task(
                self._feedback(client, body["request_id"], self.labels[index])
            )
            self._pending_feedback.add(task)
            task.add_done_callback(self._pending_feedback.discard)

    async def _feedback(self, client: httpx.AsyncClient, request_id: str, label: Any) -> None:
        low, high = self.config.outcome_delay_s
        delay = self._rng.uniform(low, high)
        if self._rng.random() < self.config.late_fraction:
            delay += self.config.late_delay_s
        await asyncio.sleep(delay)
        try:
            response = await client.post(
                "/feedback", json={"request_id": request_id, "label": label}
            )
            response.raise_for_status()
            self.stats.feedback_sent += 1
        except httpx.HTTPError as exc:
            self.stats.feedback_failed += 1
            self.stats.record_error(f"feedback: {_describe(exc)}")


def _describe(exc: Exception) -> str:
    """The error's type and message: httpx timeouts and resets have an empty message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
