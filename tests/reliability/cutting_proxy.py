"""An HTTP reverse proxy whose link to the upstream server can be cut after N requests.

Put between a client and MLflow, it lets a test cut MLflow off at an exact point of a
sequence of calls: :meth:`CuttingProxy.cut_after` lets ``n`` more requests through, then
drops every connection without an answer (what a client sees when the server dies or
the network goes) until :meth:`CuttingProxy.heal`. It records the requests it forwarded.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from modelcanary.infra.processes import LOCALHOST, free_port

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class CuttingProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or LOCALHOST
        self.upstream_port = parts.port or 80
        self.port = free_port()
        self.forwarded: list[str] = []
        self.refused = 0
        self._budget: int | None = None  # requests still let through; None: no cut
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if not proxy._admit(f"{self.command} {self.path.split('?')[0]}"):
                    self.close_connection = True  # no answer at all: a dead server
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

            def log_message(self, *_: object) -> None:
                return None

        self._server = ThreadingHTTPServer((LOCALHOST, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _admit(self, request: str) -> bool:
        with self._lock:
            if self._budget is not None:
                if self._budget <= 0:
                    self.refused += 1
                    return False
                self._budget -= 1
            self.forwarded.append(request)
            return True

    def cut_after(self, requests: int) -> None:
        """Let ``requests`` more requests through, then drop all until :meth:`heal`."""
        with self._lock:
            self._budget = requests
            self.refused = 0

    def heal(self) -> None:
        with self._lock:
            self._budget = None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
