"""Deliberately bad candidate models for serving tests: one raises, one is slow.

They are MLflow pyfunc models whose class lives here; the serving process imports this
module when it loads them (it runs from the repository root).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import mlflow.pyfunc
import pandas as pd

from modelcanary.registry import Registry


class RaisingModel(mlflow.pyfunc.PythonModel):
    """Fails every call, as a broken candidate would."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[int]:
        raise RuntimeError("deliberately broken candidate")


class SlowModel(mlflow.pyfunc.PythonModel):
    """Answers correctly-shaped predictions, but only after ``delay_s``."""

    def __init__(self, delay_s: float = 1.0) -> None:
        self.delay_s = delay_s

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[int]:
        time.sleep(self.delay_s)
        return [1] * len(model_input)


def register_pyfunc(
    registry: Registry, model_name: str, python_model: mlflow.pyfunc.PythonModel, X: pd.DataFrame
) -> str:
    """Log ``python_model`` with the signature of ``X`` and register it; returns the version."""
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    mlflow.set_experiment("modelcanary-tests")
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no input example: logging must not call predict
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            signature=infer_signature(X),
            pip_requirements=["mlflow"],
        )
    return registry.register_model_uri(model_name, info.model_uri)
