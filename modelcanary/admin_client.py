"""HTTP client of a serving replica's admin endpoints (what the `rollout` CLI calls)."""

from __future__ import annotations

from typing import Any

import httpx

from modelcanary.errors import ModelcanaryError


class AdminCallError(ModelcanaryError):
    """An admin call failed; the message says how to fix it."""


class AdminClient:
    def __init__(self, url: str, token: str | None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.post(f"{self.url}{path}", json=body or {}, headers=headers,
                                  timeout=self.timeout_s)  # fmt: skip
        except httpx.ConnectError as exc:
            raise AdminCallError(
                f"no serving replica answers at {self.url}: start one with `modelcanary serve`, "
                "or pass --url / set MODELCANARY_SERVING_URL"
            ) from exc
        except httpx.HTTPError as exc:
            raise AdminCallError(f"admin call to {self.url}{path} failed: {exc}") from exc
        if response.status_code == 401:
            raise AdminCallError(
                "the replica refused the token: pass --token or set MODELCANARY_ADMIN_TOKEN to "
                "the token the serving replicas were started with"
            )
        if response.status_code == 404 and "json" not in response.headers.get("content-type", ""):
            raise AdminCallError(f"{self.url} has no admin endpoint {path}: is it modelcanary?")
        if response.status_code >= 400:
            raise AdminCallError(_message(response))
        return response.json()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or f"HTTP {response.status_code}"
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # BentoML answers errors as [{"error": ...}]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("detail") or body)[:300]
    return str(body)[:300]
