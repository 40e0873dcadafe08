"""The serving middleware's hot path adds no coroutine of its own; its refusals still answer."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.service import ServingMiddleware


class InnerApp:
    def __init__(self) -> None:
        self.coroutines: list[Any] = []
        self.bodies: list[bytes] = []

    def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        async def answer() -> None:
            message = await receive()
            self.bodies.append(message["body"])

        coroutine = answer()
        self.coroutines.append(coroutine)
        return coroutine


def _post(length: bytes | None) -> dict:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", length))
    return {"type": "http", "method": "POST", "path": "/predict", "headers": headers}


def _run(middleware: ServingMiddleware, scope: dict, body: bytes) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(_await(middleware(scope, receive, send)))
    return sent


async def _await(awaitable: Any) -> None:
    await awaitable


def test_a_request_that_fits_runs_the_inner_apps_own_coroutine() -> None:
    inner = InnerApp()
    middleware = ServingMiddleware(inner)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        raise AssertionError("the inner app answers")

    awaitable = middleware(_post(b"2"), receive, send)
    assert awaitable is inner.coroutines[0]  # no coroutine of the middleware's around it
    asyncio.run(_await(awaitable))
    assert inner.bodies == [b"{}"]


def test_a_body_without_a_length_is_buffered_and_handed_on() -> None:
    inner = InnerApp()
    assert _run(ServingMiddleware(inner), _post(None), b'{"a": 1}') == []
    assert inner.bodies == [b'{"a": 1}']


def test_refusals_are_answered_without_the_inner_app() -> None:
    inner = InnerApp()
    middleware = ServingMiddleware(inner)
    too_long = str(middleware.max_bytes + 1).encode()
    for length, status in ((b"abc", 400), (too_long, 413)):
        sent = _run(middleware, _post(length), b"")
        assert sent[0]["status"] == status
    assert inner.coroutines == []
