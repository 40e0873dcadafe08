"""serving/limits.py: 431 for headers over the configured size or count, nothing else touched.

The middleware is driven as an ASGI server drives it; what it wraps is a trivial app
that records whether it was called. (The same limits through a real `bentoml serve`:
tests/reliability/test_security.py::test_oversized_request_headers_are_refused.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from modelcanary.config import Settings
from serving.limits import STATUS, HeaderLimitMiddleware

SETTINGS = Settings(max_header_bytes=1_000, max_headers=10)


def _call(headers: list[tuple[bytes, bytes]], kind: str = "http") -> tuple[list[dict], bool]:
    """Run one request through the middleware: (messages sent, whether the app was reached)."""
    reached: list[bool] = []
    sent: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": kind, "method": "GET", "path": "/healthz", "headers": headers}
    asyncio.run(HeaderLimitMiddleware(app, SETTINGS)(scope, receive, send))
    return sent, bool(reached)


def _sized(total: int) -> list[tuple[bytes, bytes]]:
    """A host header plus one padding header, names and values adding up to ``total`` bytes."""
    host = (b"host", b"127.0.0.1:3000")
    pad = total - len(host[0]) - len(host[1]) - len(b"x-pad")
    return [host, (b"x-pad", b"x" * pad)]


def test_headers_at_the_limits_pass_through() -> None:
    sent, reached = _call(_sized(1_000))
    assert reached and sent[0]["status"] == 200
    sent, reached = _call([(f"x-h{i}".encode(), b"1") for i in range(10)])
    assert reached and sent[0]["status"] == 200


@pytest.mark.parametrize(
    ("headers", "names"),
    [
        (_sized(1_001), "1000 bytes in total (MODELCANARY_MAX_HEADER_BYTES)"),
        ([(b"x-pad", b"x" * 1_000_000)], "MODELCANARY_MAX_HEADER_BYTES"),
        ([(b"x" * 2_000, b"")], "MODELCANARY_MAX_HEADER_BYTES"),
        ([(f"x-h{i}".encode(), b"1") for i in range(11)], "more than 10 request header fields"),
    ],
    ids=["one byte over", "one huge value", "one huge name", "one field too many"],
)
def test_headers_over_a_limit_get_431_naming_it(
    headers: list[tuple[bytes, bytes]], names: str
) -> None:
    sent, reached = _call(headers)
    assert not reached
    start, body = sent
    assert start["status"] == STATUS == 431
    assert (b"connection", b"close") in start["headers"]
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    assert names in json.loads(body["body"])["error"]


def test_refusals_do_not_share_header_lists_between_requests() -> None:
    first, _ = _call(_sized(2_000))
    first[0]["headers"].append((b"x-added-by-an-outer-middleware", b"1"))
    second, _ = _call(_sized(2_000))
    assert (b"x-added-by-an-outer-middleware", b"1") not in second[0]["headers"]


def test_lifespan_and_other_scopes_pass_through() -> None:
    _, reached = _call(_sized(5_000), kind="lifespan")
    assert reached


def test_the_defaults_come_from_the_settings() -> None:
    middleware = HeaderLimitMiddleware(None, Settings())
    assert (middleware.max_bytes, middleware.max_count) == (16_384, 100)
