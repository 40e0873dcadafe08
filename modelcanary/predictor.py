"""A loaded model version that turns feature rows into ``(prediction, score)`` pairs.

Two ways in, chosen by the flavors in the version's ``MLmodel`` file:

- **sklearn flavor** (what :meth:`Registry.register_sklearn` logs): the estimator itself
  is loaded with ``mlflow.sklearn.load_model``, so ``predict_proba`` is available and
  MLflow's pyfunc schema enforcement (~0.3 ms a call) is skipped. The score of a binary
  classifier is the probability of its positive class, ``classes_[1]``.
- **any other flavor**: ``mlflow.pyfunc.load_model`` with a DataFrame; the score is None.

Predictions and scores are JSON-native Python values (``int``, ``float``, ``str``), never
numpy scalars, so they go straight into events and HTTP answers; a score that is not a
finite number (a model overflowing on extreme inputs) becomes None.

Every predictor carries the :class:`~modelcanary.validation.InputSchema` of its version's
MLflow signature, which serving checks requests against before calling the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelcanary.errors import PredictionError, RegistryError
from modelcanary.validation import FeatureKind, FeatureSpec, InputSchema

Row = Mapping[str, Any]
Prediction = tuple[Any, float | None]

_NUMERIC_TYPES = {"double", "float", "long", "integer"}


class Predictor:
    """One loaded model version.

    For a binary classifier one ``predict_proba`` call gives both answers: the score is
    the positive-class probability and the prediction the class of highest probability,
    ``classes_[argmax]``. That is what ``predict`` returns for logistic regression,
    forests, boosting and calibrated models, at half the cost of calling both (each
    call re-validates the input in every pipeline step, ~0.25 ms); it also keeps the
    prediction consistent with the score. Models whose ``predict`` is not the argmax
    of their probabilities (``SVC(probability=True)``) are therefore judged by the
    argmax. Other models answer with ``predict`` and no score.
    """

    def __init__(
        self,
        model: Any,
        feature_names: Sequence[str],
        version: str,
        *,
        flavor: str,
        numeric_features: bool = True,
        schema: InputSchema | None = None,
    ) -> None:
        self.model = model
        self.feature_names: list[str] = list(feature_names)
        self.version = str(version)
        self.flavor = flavor
        self._numeric = numeric_features
        if schema is None:
            kind = FeatureKind.NUMBER if numeric_features else FeatureKind.ANY
            schema = InputSchema(FeatureSpec(n, kind) for n in self.feature_names)
        self.schema = schema
        self._binary_proba = (
            flavor == "sklearn"
            and hasattr(model, "predict_proba")
            and len(getattr(model, "classes_", ())) == 2
        )
        self._classes = np.asarray(getattr(model, "classes_", ()))

    def __repr__(self) -> str:
        return (
            f"Predictor(version={self.version!r}, flavor={self.flavor!r}, "
            f"features={len(self.feature_names)})"
        )

    def predict(self, rows: Sequence[Row]) -> list[Prediction]:
        """``[(prediction, score or None), ...]``, one pair per row, in order."""
        if not rows:
            return []
        frame = self._frame(rows)
        if not self._binary_proba:
            return [(p, None) for p in _to_list(self.model.predict(frame))]
        proba = np.asarray(self.model.predict_proba(frame), dtype=np.float64)
        predictions = _to_list(self._classes[proba.argmax(axis=1)])
        return [
            (p, s if math.isfinite(s) else None)
            for p, s in zip(predictions, proba[:, 1].tolist(), strict=True)
        ]

    def _frame(self, rows: Sequence[Row]) -> pd.DataFrame:
        names = self.feature_names
        missing = [n for n in names if n not in rows[0]]
        if missing:
            raise PredictionError(f"missing feature(s) {missing[:10]} for version {self.version}")
        if self._numeric and self.flavor == "sklearn":
            try:
                values = np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
            except KeyError as exc:
                raise PredictionError(f"missing feature {exc.args[0]!r}") from exc
            except (TypeError, ValueError) as exc:
                raise PredictionError(f"non-numeric feature value: {exc}") from exc
            return pd.DataFrame(values, columns=names)
        try:
            return pd.DataFrame.from_records([{n: row[n] for n in names} for row in rows])
        except KeyError as exc:
            raise PredictionError(f"missing feature {exc.args[0]!r}") from exc


def _to_list(output: Any) -> list[Any]:
    """Model output (ndarray, Series, DataFrame, list) → a list of JSON-native values."""
    if isinstance(output, pd.DataFrame):
        output = output.iloc[:, 0]
    if isinstance(output, pd.Series):
        output = output.to_numpy()
    return np.asarray(output).ravel().tolist()


def load_local_predictor(path: str | Path, version: str) -> Predictor:
    """Load the MLflow model in the local directory ``path`` (downloaded already)."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import Model

    meta = Model.load(str(path))
    flavor = "sklearn" if "sklearn" in meta.flavors else "pyfunc"
    model = (
        mlflow.sklearn.load_model(str(path))
        if flavor == "sklearn"
        else mlflow.pyfunc.load_model(str(path))
    )
    names, numeric = _signature_columns(meta, model)
    if not names:
        raise RegistryError(
            f"version {version} has no input signature with column names: log it with "
            "`signature=infer_signature(X, model.predict(X))` and a DataFrame X"
        )
    schema = None
    if meta.signature is not None:
        schema = InputSchema.from_mlflow(meta.signature.inputs)
    return Predictor(model, names, version, flavor=flavor, numeric_features=numeric, schema=schema)


def _signature_columns(meta: Any, model: Any) -> tuple[list[str], bool]:
    signature = meta.signature
    if (
        signature is not None
        and signature.inputs is not None
        and signature.inputs.has_input_names()
    ):
        inputs = signature.inputs
        types = [getattr(t, "name", str(t)) for t in inputs.input_types()]
        return list(inputs.input_names()), all(t in _NUMERIC_TYPES for t in types)
    names = getattr(model, "feature_names_in_", None)
    return ([str(n) for n in names], True) if names is not None else ([], True)
