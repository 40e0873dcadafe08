"""Webhooks against a real local HTTP server: delivered, retried, never blocking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from modelcanary.events import Action, DecisionEvent
from modelcanary.notify import WebhookNotifier, message


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if Receiver.fail_first > 0:
            Receiver.fail_first -= 1
            self.send_response(503)
        else:
            Receiver.received.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver_url() -> Iterator[str]:
    Receiver.received = []
    Receiver.fail_first = 0
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook?token=secret"
    server.shutdown()


DECISION = DecisionEvent(
    model="m",
    rollout_id="r",
    action=Action.ROLLBACK,
    from_state="running:0",
    to_state="rolled_back",
    traffic_fraction=0.0,
    reason="accuracy dropped by 0.12",
)


def test_delivers_each_decision_with_a_chat_text(receiver_url: str) -> None:
    notifier = WebhookNotifier([receiver_url])
    notifier.notify(DECISION)
    notifier.close()
    [payload] = Receiver.received
    assert payload["event_id"] == DECISION.event_id
    assert payload["text"] == message(DECISION) and "rollback" in payload["text"]


def test_a_failing_webhook_is_retried(receiver_url: str) -> None:
    Receiver.fail_first = 2
    notifier = WebhookNotifier([receiver_url], attempts=3, backoff_s=0.01)
    notifier.notify(DECISION)
    notifier.close()
    assert len(Receiver.received) == 1 and notifier.delivered == 1


def test_a_dead_webhook_never_blocks_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    notifier = WebhookNotifier(
        ["http://127.0.0.1:9/hook?token=secret"], attempts=2, backoff_s=0.01, timeout_s=0.5
    )
    started = time.monotonic()
    for _ in range(50):
        notifier.notify(DECISION)
    assert time.monotonic() - started < 0.1
    notifier.close(timeout_s=10)
    assert notifier.failed == 50
    assert "secret" not in caplog.text
