"""A candidate that fails on a share of its calls, for the SLO burn-rate test.

An MLflow pyfunc model whose class lives here; the serving process imports this module
when it loads it (it runs from the repository root), as with :mod:`.faulty_models`.
"""

from __future__ import annotations

import random
from typing import Any

import mlflow.pyfunc
import pandas as pd


class FlakyModel(mlflow.pyfunc.PythonModel):
    """Raises on about ``fail_share`` of its calls; answers 1 otherwise."""

    def __init__(self, fail_share: float) -> None:
        self.fail_share = fail_share

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> list[int]:
        if random.random() < self.fail_share:
            raise RuntimeError("deliberately flaky candidate")
        return [1] * len(model_input)
