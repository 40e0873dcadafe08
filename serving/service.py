"""BentoML service for one registered model: predict, predict_batch, feedback, health.

Thin on purpose: it wires a :class:`modelcanary.serving_wiring.Serving` (router, Kafka
publisher with disk spool, decision watcher, metrics) to HTTP. Run it with::

    bentoml serve serving.service:ModelcanaryService --host 127.0.0.1 --port 3000

The model name, Kafka and MLflow addresses, worker count and limits come from
``MODELCANARY_*`` settings (:mod:`modelcanary.config`), read once at import.

HTTP status codes: 400 for a request a client must fix (the message names the field),
413 for a body over ``MODELCANARY_MAX_REQUEST_BYTES``, 422 when the features fit the
signature but the champion rejects the values (it raised ``ValueError``, e.g. on an
overflow), 503 before a champion is loaded, 500 only if the champion itself fails
otherwise. The challenger and Kafka never cause an error.
``/docs.json`` describes ``features`` with the current champion's signature.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, NoReturn

import bentoml
from bentoml.exceptions import (
    InternalServerError,
    InvalidArgument,
    ServiceUnavailable,
    UnprocessableEntity,
)
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from modelcanary.config import load_settings
from modelcanary.cpu_affinity import pin_worker
from modelcanary.errors import (
    InputRejectedError,
    InvalidRequestError,
    ModelcanaryError,
    NotReadyError,
    PredictionError,
)
from modelcanary.orphan_watch import ParentWatch
from modelcanary.router import Answer, BatchRow
from modelcanary.serving_metrics import ServingMetrics
from modelcanary.serving_wiring import Serving, build_serving
from serving.admin import AdminEndpoints
from serving.limits import HeaderLimitMiddleware

log = logging.getLogger("modelcanary.serving")

SETTINGS = load_settings()
MAX_ID_CHARS = 200
MAX_KPIS = 100
# A body declared larger than the limit is read and discarded up to this size, so the
# client gets to read the 413 instead of seeing its upload cut off.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024

# The one Serving of this worker process, for the middleware and the OpenAPI schema.
_SERVING: list[Serving] = []


class _LiveFeatureSchema:
    """Pydantic JSON-schema hook: ``features`` as the current champion's signature says.

    Pydantic calls it each time the OpenAPI document is generated, so ``/docs.json``
    follows a champion whose signature changed without a restart.
    """

    def __get_pydantic_json_schema__(self, _core_schema: Any, _handler: Any) -> dict[str, Any]:
        champion = _SERVING[0].router.snapshot.champion if _SERVING else None
        if champion is not None:
            return champion.schema.json_schema()
        return {
            "type": "object",
            "description": "Feature name -> value, as in the model's MLflow signature",
            "additionalProperties": True,
        }


# BentoML's OpenAPI generator keeps only the first branch of a union (``anyOf``), so
# every optional or union-typed field states its OpenAPI 3.0 schema explicitly.
Features = Annotated[dict[str, Any], _LiveFeatureSchema()]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
RequestId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
OptionalId = Annotated[RequestId | None, WithJsonSchema({**_ID_SCHEMA, "nullable": True})]
Label = Annotated[
    bool | int | FiniteFloat | Annotated[str, Field(max_length=1000)] | None,
    WithJsonSchema({"nullable": True, "description": "The true label: a class or a number"}),
]
Kpis = Annotated[
    dict[Annotated[str, Field(max_length=MAX_ID_CHARS)], FiniteFloat] | None,
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "maxProperties": MAX_KPIS,
            "nullable": True,
        }
    ),
]
PredictionValue = Annotated[
    bool | int | float | str | None,
    WithJsonSchema({"nullable": True, "description": "The model's answer: a class or a number"}),
]
Score = Annotated[float | None, WithJsonSchema({"type": "number", "nullable": True})]


class PredictInput(BaseModel):
    """Body of ``/predict``."""

    model_config = ConfigDict(extra="forbid")

    features: Features
    request_id: OptionalId = Field(
        default=None, description="Your id of this request (joins outcomes); generated if absent"
    )
    unit_id: OptionalId = Field(
        default=None, description="Sticky routing key, e.g. a user id; the request id if absent"
    )


class PredictRow(PredictInput):
    """One row of ``/predict_batch``."""


class PredictBatchInput(BaseModel):
    """Body of ``/predict_batch``."""

    model_config = ConfigDict(extra="forbid")

    rows: list[PredictRow] = Field(
        min_length=1,
        max_length=SETTINGS.max_batch_rows,
        description="Rows to score; each is routed by its own unit_id (else request_id)",
    )


class FeedbackInput(BaseModel):
    """Body of ``/feedback``."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId = Field(description="The request id /predict returned")
    label: Label = Field(default=None, description="The true label")
    kpis: Kpis = Field(
        default=None,
        max_length=MAX_KPIS,
        description="Business outcomes by name, e.g. converted, revenue",
    )


class PredictAnswer(BaseModel):
    request_id: str
    prediction: PredictionValue
    score: Score = Field(description="Probability of the positive class, if any")
    version: str = Field(description="The model version that answered")
    arm: Literal["champion", "challenger"]


class BatchAnswer(BaseModel):
    predictions: list[PredictAnswer]


class FeedbackAnswer(BaseModel):
    accepted: bool
    event_id: str


def _answer(answer: Any) -> PredictAnswer:
    return PredictAnswer(
        request_id=answer.request_id,
        prediction=answer.prediction,
        score=answer.score,
        version=answer.version,
        arm=str(answer.arm),  # the value: a StrEnum's str() is str's own (.value is Python)
    )


class ServingMiddleware:
    """Header limits (431, :mod:`serving.limits`); ``GET /healthz`` as JSON; request bodies
    above the limit get 413; fresh gauges on scrape."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.max_bytes = SETTINGS.max_request_bytes
        self.header_limits = HeaderLimitMiddleware(app, SETTINGS)

    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[None]:
        # A plain function returning the awaitable of whatever answers: on the hot path the
        # inner app's own coroutine, so a request runs one coroutine fewer. (Each of the
        # ~250 exceptions sklearn and pandas raise and catch in a prediction walks the chain
        # of running coroutines: ~3.5 k instructions a request per link.)
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        refusal, length = self.header_limits.scan(scope["headers"])  # before anything else
        if refusal is not None:
            return self.header_limits.refuse(send, refusal)
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method == "GET":
            if _SERVING:
                return _json(send, 200, _SERVING[0].router.health())
            return _json(send, 503, {"status": "starting"})
        if path == "/metrics" and _SERVING:
            serving = _SERVING[0]
            if isinstance(serving.metrics, ServingMetrics):
                serving.metrics.publisher(serving.publisher.stats())
        if method in ("POST", "PUT", "PATCH"):
            # the Content-Length: None if absent, -1 if it is not a number (no call: hot path)
            declared = None
            if length is not None:
                try:
                    declared = int(length)
                except ValueError:
                    declared = -1
                if declared < 0:
                    declared = -1
            if declared is None or not 0 <= declared <= self.max_bytes:  # else it fits
                return self._limited_then_app(declared, scope, receive, send)
        return self.app(scope, receive, send)

    async def _limited_then_app(
        self, declared: int | None, scope: dict, receive: Any, send: Any
    ) -> None:
        limited = await self._limited(declared, receive, send)
        if limited is not None:
            await self.app(scope, limited, send)

    async def _limited(self, declared: int | None, receive: Any, send: Any) -> Any:
        """``receive`` if the body fits (buffered when its length is not declared), else None
        (answered). ``declared`` is the Content-Length: -1 if it is not a number."""
        too_large = {
            "error": f"request body larger than {self.max_bytes} bytes "
            "(MODELCANARY_MAX_REQUEST_BYTES); send fewer rows per call"
        }
        if declared is not None:
            if declared < 0:
                await _json(send, 400, {"error": "invalid Content-Length header"})
                return None
            if declared > self.max_bytes:
                if declared <= DRAIN_LIMIT_BYTES:
                    await _drain(receive)  # so that the client reads the 413
                await _json(send, 413, too_large)
                return None
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _json(send, 413, too_large)
                return None
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


async def _drain(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _json(send: Any, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _raise_http(exc: ModelcanaryError) -> NoReturn:
    """Our errors as HTTP answers: 422 bad values, 400 bad request, 503 not ready, 500.

    Called from an ``except`` block (cheaper on every request than a context manager).
    """
    if isinstance(exc, InputRejectedError):
        raise UnprocessableEntity(str(exc)) from exc
    if isinstance(exc, InvalidRequestError):
        raise InvalidArgument(str(exc)) from exc
    if isinstance(exc, NotReadyError):
        raise ServiceUnavailable(str(exc)) from exc
    if isinstance(exc, PredictionError):
        log.error("%s", exc)
        raise InternalServerError(str(exc)) from exc
    raise exc


@bentoml.service(
    name="modelcanary",
    workers=SETTINGS.serving_workers,
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
)
class ModelcanaryService(AdminEndpoints):
    def __init__(self) -> None:
        # before any thread starts, so that every thread is on the worker's CPU
        pin_worker(
            SETTINGS.worker_cpus,
            bentoml.server_context.worker_index or 1,
            SETTINGS.serving_workers,
        )
        self.parent_watch = ParentWatch().start()  # first: starting takes seconds
        self.settings = SETTINGS
        self.serving = build_serving(self.settings)
        self.router = self.serving.router
        self.serving.start()
        _SERVING[:] = [self.serving]
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.router.snapshot.champion is not None

    @bentoml.api(input_spec=PredictInput)
    async def predict(
        self, features: dict[str, Any], request_id: str | None = None, unit_id: str | None = None
    ) -> PredictAnswer:
        """Answer with the version the split picks; emits a prediction event per model call."""
        try:
            answer = self.router.serve(features, request_id, unit_id)
            if type(answer) is not Answer:  # the challenger's turn: a coroutine
                answer = await answer
        except ModelcanaryError as exc:
            _raise_http(exc)
        return _answer(answer)

    @bentoml.api(input_spec=PredictBatchInput)
    async def predict_batch(self, rows: list[PredictRow]) -> BatchAnswer:
        """Answer many rows in one call: one model call per arm, one event per row."""
        batch = [BatchRow(r.features, r.request_id, r.unit_id) for r in rows]
        try:
            answers = await self.router.predict_batch(batch)
        except ModelcanaryError as exc:
            _raise_http(exc)
        return BatchAnswer(predictions=[_answer(a) for a in answers])

    # Named after predict* on purpose: BentoML tries routes in the alphabetical order of
    # the methods' names, and every /predict request would first be matched against
    # /feedback's route.
    @bentoml.api(route="/feedback", name="feedback", input_spec=FeedbackInput)
    async def record_feedback(
        self, request_id: str, label: Any = None, kpis: dict[str, float] | None = None
    ) -> FeedbackAnswer:
        """Report what happened after a prediction; emits an outcome event."""
        try:
            event = self.router.feedback(request_id, label, kpis)
        except InvalidRequestError as exc:
            raise InvalidArgument(str(exc)) from exc
        return FeedbackAnswer(accepted=True, event_id=event.event_id)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.parent_watch.stop()
        self.serving.stop()


ModelcanaryService.add_asgi_middleware(ServingMiddleware)
