"""The Python API a training job calls: ``modelcanary.register(model, "name", X)``.

Example::

    import modelcanary
    from modelcanary.demo_data import load_demo_dataset, train_variant

    data = load_demo_dataset()
    model = train_variant("good", data)
    version = modelcanary.register(model, "demo-classifier", data.X_train, challenger=True)

The first version of a model becomes its ``champion``; later ones are plain versions
until a rollout (or ``challenger=True``) points the ``challenger`` alias at them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from modelcanary.config import load_settings
from modelcanary.registry import CHALLENGER, CHAMPION, Registry


def register(
    model: Any,
    name: str,
    input_example: pd.DataFrame,
    *,
    tracking_uri: str | None = None,
    challenger: bool = False,
    description: str | None = None,
    metrics: dict[str, float] | None = None,
    version_tags: dict[str, str] | None = None,
) -> str:
    """Log the fitted scikit-learn ``model`` to MLflow and register it as a version of ``name``.

    Args:
        model: a fitted scikit-learn estimator or pipeline.
        name: the registered model's name, e.g. ``"demo-classifier"``.
        input_example: feature rows with the column names requests will use; the model's
            signature is inferred from them.
        tracking_uri: MLflow URI; defaults to ``MODELCANARY_MLFLOW_URI`` or the embedded
            server started by ``modelcanary up``.
        challenger: also point the ``challenger`` alias at the new version (ignored for a
            first version, which becomes ``champion``).
        description: the version's description in the MLflow UI.
        metrics: logged on the training run (e.g. ``{"test_accuracy": 0.96}``).
        version_tags: tags set on the new version.

    Returns:
        The new version, as a string (``"1"``, ``"2"``, ...).
    """
    uri = tracking_uri or load_settings().resolved_mlflow_uri()
    registry = Registry(uri)
    version = registry.register_sklearn(
        name,
        model,
        input_example,
        description=description,
        version_tags=version_tags,
        metrics=metrics,
    )
    if challenger and registry.alias_version(name, CHAMPION) != version:
        registry.set_alias(name, CHALLENGER, version)
    return version
