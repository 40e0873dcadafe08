"""The baseline of ``serving_overhead.py``: the champion behind BentoML, no canary machinery.

What a careful team would write to serve one MLflow model without modelcanary: the same
loaded :class:`~modelcanary.predictor.Predictor`, the same input validation from the
signature and the same BentoML settings (no access log, short traffic timeout, frozen GC,
``MODELCANARY_WORKER_CPUS``) as ``serving/service.py`` — and nothing else: no routing,
no events, no Kafka, no challenger, no metrics of its own. The difference between the two
is what modelcanary costs.

    bentoml serve benchmarks.plain_service:PlainService --port 3001
"""

from __future__ import annotations

import gc
import os
from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, ConfigDict, Field

from modelcanary.config import load_settings
from modelcanary.cpu_affinity import pin_worker
from modelcanary.errors import InvalidRequestError
from modelcanary.registry import Registry

SETTINGS = load_settings()


class PlainInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any]
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    unit_id: str | None = Field(default=None, min_length=1, max_length=200)


class PlainAnswer(BaseModel):
    request_id: str
    prediction: bool | int | float | str | None
    score: float | None
    version: str
    arm: str


@bentoml.service(
    name="plain",
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
)
class PlainService:
    def __init__(self) -> None:
        import mlflow

        pin_worker(SETTINGS.worker_cpus, bentoml.server_context.worker_index or 1)
        uri = SETTINGS.resolved_mlflow_uri()
        mlflow.set_tracking_uri(uri)  # as serving_wiring does: models:/ URIs resolve by it
        mlflow.set_registry_uri(uri)
        registry = Registry(uri)
        model = SETTINGS.model_name
        version = registry.alias_version(model, "champion")
        if version is None:
            raise RuntimeError(f"{model} has no champion")
        self.predictor = registry.load_predictor(model, version)
        gc.collect()
        gc.freeze()

    @bentoml.api(input_spec=PlainInput)
    async def predict(
        self, features: dict[str, Any], request_id: str | None = None, unit_id: str | None = None
    ) -> PlainAnswer:
        predictor = self.predictor
        try:
            predictor.schema.validate(features)
        except InvalidRequestError as exc:
            raise InvalidArgument(str(exc)) from exc
        prediction, score = predictor.predict((features,))[0]
        return PlainAnswer(
            request_id=request_id or os.urandom(16).hex(),
            prediction=prediction,
            score=score,
            version=predictor.version,
            arm="champion",
        )
