"""Request header limits: too large or too many header fields get 431, before anything else.

``bentoml serve`` runs uvicorn with the httptools parser, which puts no bound of its own
on a request's header: it reads and buffers one of 50 MB (measured) and hands it to the
application. (uvicorn's other parser, h11, refuses a header over 16 KiB by default, but
BentoML does not let us choose the parser.) :class:`HeaderLimitMiddleware` refuses a
request whose header fields total more than ``MODELCANARY_MAX_HEADER_BYTES`` bytes
(names plus values, as uvicorn hands them over) or number more than
``MODELCANARY_MAX_HEADERS``, with ``431 Request Header Fields Too Large``, a JSON body
naming the limit, and ``Connection: close``. No endpoint, no modelcanary middleware, no
model and no event ever sees such a request.

What it cannot do: by the time an ASGI middleware runs, the server has already received
the whole header, so the limit bounds what the service processes, not what one request
may make the server buffer. Bound that in front of the service (nginx's
``large_client_header_buffers``, an ingress or load balancer header limit).

It is on every request's path: the check is one pass over ``scope["headers"]`` adding
lengths; the refusals' bodies are encoded once, at start. The service runs the check
first thing in its own middleware (:meth:`HeaderLimitMiddleware.scan`) rather than
as one more ASGI layer, which costs every request a coroutine.
"""

from __future__ import annotations

import json
from typing import Any

from modelcanary.config import Settings

STATUS = 431


#: A 431 answer: its body, and its header fields.
Refusal = tuple[bytes, tuple[tuple[bytes, bytes], ...]]


def _refusal(message: str) -> Refusal:
    body = json.dumps({"error": message}).encode()
    headers = (
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    )
    return body, headers


class HeaderLimitMiddleware:
    """ASGI middleware: 431 for a request whose headers exceed the settings' limits."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.max_header_bytes
        self.max_count = settings.max_headers
        self._too_large = _refusal(
            f"request headers larger than {self.max_bytes} bytes in total "
            "(MODELCANARY_MAX_HEADER_BYTES)"
        )
        self._too_many = _refusal(
            f"more than {self.max_count} request header fields (MODELCANARY_MAX_HEADERS)"
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self.scan(scope["headers"])[0]
            if refusal is not None:
                await self.refuse(send, refusal)
                return
        await self.app(scope, receive, send)

    def scan(self, headers: list[tuple[bytes, bytes]]) -> tuple[Refusal | None, bytes | None]:
        """What to answer a request with these header fields (None if they fit), and its
        raw ``Content-Length`` (None if absent): one pass for both, on every request."""
        if len(headers) > self.max_count:
            return self._too_many, None
        size = 0
        length = None
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"content-length" and length is None:
                length = value
        return (self._too_large if size > self.max_bytes else None), length

    @staticmethod
    async def refuse(send: Any, refusal: Refusal) -> None:
        # Fresh messages each time: middlewares further out may add to their headers.
        body, headers = refusal
        await send({"type": "http.response.start", "status": STATUS, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})
