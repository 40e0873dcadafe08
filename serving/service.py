"""BentoML service for one registered model: predict, feedback, health.

Thin on purpose: it wires a :class:`modelcanary.router.ModelRouter` to HTTP. Run it with::

    bentoml serve serving.service:ModelcanaryService --host 127.0.0.1 --port 3000

The model name, Kafka and MLflow addresses come from ``MODELCANARY_*`` settings.
"""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from pydantic import Field

from modelcanary.config import load_settings
from modelcanary.router import InvalidRequestError, ModelRouter, NotReadyError
from modelcanary.serving_wiring import build_router

log = logging.getLogger("modelcanary.serving")

# The one router of this worker process, for the /healthz middleware below.
_ROUTER: list[ModelRouter] = []


class HealthMiddleware:
    """Answers ``GET /healthz`` with the router's state as JSON (BentoML's own is plain text)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] == "GET":
            if _ROUTER:
                body = _ROUTER[0].health()
                status = 200
            else:
                body, status = {"status": "starting"}, 503
            payload = json.dumps(body).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await self.app(scope, receive, send)


@bentoml.service(
    name="modelcanary",
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
)
class ModelcanaryService:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.router = build_router(self.settings)
        self.router.start()
        _ROUTER[:] = [self.router]
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.router.snapshot.champion is not None

    @bentoml.api
    async def predict(
        self,
        features: dict[str, float | int | str | bool | None] = Field(
            description="Feature name -> value, as in the model's MLflow signature"
        ),
        request_id: str | None = Field(
            default=None, max_length=200, description="Your id of this request (joins outcomes)"
        ),
        unit_id: str | None = Field(
            default=None,
            max_length=200,
            description="Sticky routing key, e.g. a user id; the request id when absent",
        ),
    ) -> dict[str, Any]:
        """Answer with the version the split picks; emits a prediction event per model call."""
        try:
            answer = await self.router.predict(features, request_id, unit_id)
        except InvalidRequestError as exc:
            raise InvalidArgument(str(exc)) from exc
        except NotReadyError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        return {
            "request_id": answer.request_id,
            "prediction": answer.prediction,
            "score": answer.score,
            "version": answer.version,
            "arm": answer.arm.value,
        }

    @bentoml.api
    async def feedback(
        self,
        request_id: str = Field(max_length=200, description="The request id /predict returned"),
        label: float | int | str | None = Field(default=None, description="The true label"),
        kpis: dict[str, float] | None = Field(
            default=None, description="Business outcomes by name, e.g. converted, revenue"
        ),
    ) -> dict[str, Any]:
        """Report what happened after a prediction; emits an outcome event."""
        try:
            event = self.router.feedback(request_id, label, kpis)
        except InvalidRequestError as exc:
            raise InvalidArgument(str(exc)) from exc
        return {"accepted": True, "event_id": event.event_id}

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.router.stop()
        self.router.publisher.flush(5.0)  # type: ignore[attr-defined]


ModelcanaryService.add_asgi_middleware(HealthMiddleware)
