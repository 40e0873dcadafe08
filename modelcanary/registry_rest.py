"""One registered model as MLflow's REST API returns it, by a plain keep-alive HTTP GET.

Every serving worker re-reads its model's aliases and tags once a second
(:meth:`modelcanary.registry.Registry.aliases_and_tags`). Through ``MlflowClient`` a read
costs ~1.6 ms of CPU (``requests``, protobuf, entity objects); the same endpoint read with
``http.client`` and ``json.loads`` costs ~0.2 ms, CPU the worker's requests get back.

Used only where it cannot behave differently from the client: an ``http://`` tracking URI
and none of MLflow's credential or TLS variables set (:data:`CLIENT_ONLY_VARIABLES`).
Everything else (``https``, authentication, Databricks, files, SQLite) goes through the
client. Errors look like the client's: an answer other than 200 raises
:class:`~mlflow.exceptions.MlflowException` with MLflow's error code and message; a
transport failure raises ``OSError`` or ``http.client.HTTPException``.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import weakref
from typing import Any
from urllib.parse import urlencode, urlsplit

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, ErrorCode

#: With any of these set, MLflow's client adds credentials or TLS settings we would miss.
CLIENT_ONLY_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)
ENDPOINT = "/api/2.0/mlflow/registered-models/get"


class RestModelReader:
    """Reads registered models from one MLflow server over one kept-alive connection."""

    def __init__(self, host: str, port: int, base_path: str, timeout_s: float) -> None:
        self.host, self.port = host, port
        self._base_path = base_path.rstrip("/")
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        # At most one kept-alive connection; closed when the reader is collected, not
        # left to the garbage collector's ResourceWarning.
        self._open: list[http.client.HTTPConnection] = []
        weakref.finalize(self, _close_all, self._open)

    @classmethod
    def for_uri(cls, tracking_uri: str, timeout_s: float) -> RestModelReader | None:
        """A reader for ``tracking_uri``, or None where the MLflow client must be used."""
        parts = urlsplit(tracking_uri)
        if parts.scheme != "http" or not parts.hostname or parts.query:
            return None
        if any(os.environ.get(name) for name in CLIENT_ONLY_VARIABLES):
            return None
        try:
            port = parts.port or 80
        except ValueError:  # a port that is not a number: let the client report it
            return None
        return cls(parts.hostname, port, parts.path, timeout_s)

    def registered_model(self, name: str) -> dict[str, Any]:
        """The ``registered_model`` object of MLflow's ``registered-models/get`` answer."""
        path = f"{self._base_path}{ENDPOINT}?{urlencode({'name': name})}"
        with self._lock:
            status, body = self._get(path)
        if status == 200:
            answer = json.loads(body)
            model = answer.get("registered_model") if isinstance(answer, dict) else None
            if not isinstance(model, dict):
                raise MlflowException(f"unexpected answer from {ENDPOINT}: {body[:200]!r}")
            return model
        raise _error(status, body)

    def _get(self, path: str) -> tuple[int, bytes]:
        # A kept-alive connection the server has closed fails on first use: once, and
        # only then, the request is repeated on a new connection.
        reused = bool(self._open)
        try:
            return self._request(path)
        except (OSError, http.client.HTTPException):
            if not reused:
                raise
            return self._request(path)

    def _request(self, path: str) -> tuple[int, bytes]:
        if not self._open:
            self._open.append(
                http.client.HTTPConnection(self.host, self.port, timeout=self._timeout_s)
            )
        connection = self._open[0]
        try:
            connection.request(
                "GET", path, headers={"Accept": "application/json", "User-Agent": "modelcanary"}
            )
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._drop()
            raise
        if response.will_close:
            self._drop()
        return response.status, body

    def _drop(self) -> None:
        _close_all(self._open)
        self._open.clear()


def _close_all(connections: list[http.client.HTTPConnection]) -> None:
    for connection in connections:
        connection.close()


def _error(status: int, body: bytes) -> MlflowException:
    """The exception MLflow's client would raise for this error answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        code_name = str(answer.get("error_code") or "")
        try:
            code = ErrorCode.Value(code_name)
        except ValueError:
            code = INTERNAL_ERROR
        return MlflowException(answer["message"], error_code=code)
    text = body.decode("utf-8", "replace").strip()[:200]
    return MlflowException(f"HTTP {status} from {ENDPOINT}: {text}", error_code=INTERNAL_ERROR)
