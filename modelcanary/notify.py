"""Webhook notifications of decisions (for chat alerts). Never blocks the rollout.

Decisions are queued and posted by one background thread as JSON (the event itself plus
a ``text`` line that chat tools such as Slack display). A failing webhook is retried
with exponential backoff, then logged and dropped; the queue is bounded, and when it
is full the oldest notification gives way.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

import httpx

from modelcanary.events import DecisionEvent, to_dict

log = logging.getLogger(__name__)


def message(decision: DecisionEvent) -> str:
    return (
        f"modelcanary: {decision.model} {decision.action.value} "
        f"({decision.from_state} → {decision.to_state}, challenger at "
        f"{decision.traffic_fraction:.0%}): {decision.reason}"
    )


class WebhookNotifier:
    def __init__(
        self,
        urls: Sequence[str],
        attempts: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        max_queued: int = 1_000,
    ) -> None:
        self.urls = tuple(urls)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queued)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.urls:
            self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
            self._thread.start()

    def notify(self, decision: DecisionEvent) -> None:
        if not self.urls:
            return
        payload = {**to_dict(decision), "text": message(decision)}
        while True:
            try:
                self._queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    log.warning("webhook queue full: dropped the oldest notification")
                except queue.Empty:
                    pass

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while True:
                payload = self._queue.get()
                if payload is None:
                    return
                for url in self.urls:
                    self._post(client, url, payload)

    def _post(self, client: httpx.Client, url: str, payload: dict[str, Any]) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                client.post(url, json=payload).raise_for_status()
                self.delivered += 1
                return
            except httpx.HTTPError as exc:
                # str(exc) would contain the URL, and webhook URLs carry secrets.
                log.warning(
                    "webhook %s failed (attempt %d/%d): %s",
                    _redact(url),
                    attempt,
                    self.attempts,
                    _describe(exc),
                )
                if attempt < self.attempts and self._stop.wait(self.backoff_s * 2 ** (attempt - 1)):
                    break
        self.failed += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._stop.set()


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def _redact(url: str) -> str:
    """Webhook URLs often embed a secret: log only scheme and host."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}/…"
