"""The demo dataset and the three demo model variants the tutorial, tests and demo train.

The data is scikit-learn's bundled Wisconsin breast-cancer dataset (569 rows, 30 numeric
features, no download), with column names turned into identifiers (``mean radius`` →
``mean_radius``) so they survive JSON, MLflow signatures and Python keyword arguments.
The target is scikit-learn's: 1 = benign, 0 = malignant; the positive class of a score
is 1.

Three variants share one input schema (all 30 features), so a serving router can send
the same request to any of them:

========  ======================================================  =====================
variant   model                                                   test accuracy (seed 0)
========  ======================================================  =====================
baseline  StandardScaler + LogisticRegression (C=1)               ~0.96
good      StandardScaler + LogisticRegression (C=0.5)             ~0.965, as good or better
bad       LogisticRegression on two weak features (texture,       ~0.78, clearly worse
          smoothness); the other 28 are dropped
========  ======================================================  =====================

Everything is deterministic: the split is stratified with a fixed seed and every
estimator is deterministic given its data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from modelcanary.errors import ConfigError

Variant = Literal["baseline", "good", "bad"]
VARIANTS: tuple[str, ...] = get_args(Variant)

TEST_FRACTION = 0.3
#: The only features the ``bad`` variant looks at: weakly informative on their own.
BAD_VARIANT_FEATURES: tuple[str, ...] = ("mean_texture", "mean_smoothness")


@dataclass(frozen=True)
class DemoDataset:
    """A deterministic, stratified train/test split of the breast-cancer data."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]


def snake_case(name: str) -> str:
    """``"mean concave points"`` → ``"mean_concave_points"``: a valid Python identifier."""
    ident = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    return f"f_{ident}" if ident[:1].isdigit() else ident


def load_demo_dataset(seed: int = 0) -> DemoDataset:
    """Load the bundled breast-cancer data and split it 70/30, stratified by label.

    The same ``seed`` always gives the same split (``train_test_split`` with
    ``random_state=seed``).
    """
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer(as_frame=True)
    X = bunch.data.rename(columns=snake_case)
    y = bunch.target.to_numpy()
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, stratify=y, random_state=seed
    )
    return DemoDataset(
        X_train=X_train.reset_index(drop=True),
        X_test=X_test.reset_index(drop=True),
        y_train=np.asarray(y_train),
        y_test=np.asarray(y_test),
        feature_names=list(X.columns),
    )


def build_variant(variant: str):
    """An unfitted scikit-learn estimator for ``variant`` (``baseline``, ``good`` or ``bad``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if variant == "baseline":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if variant == "good":
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000))
    if variant == "bad":
        keep = ColumnTransformer([("keep", "passthrough", list(BAD_VARIANT_FEATURES))])
        return make_pipeline(keep, StandardScaler(), LogisticRegression(max_iter=1000))
    raise ConfigError(f"variant: {variant!r} is not one of {', '.join(VARIANTS)}")


def train_variant(variant: str, dataset: DemoDataset):
    """Fit ``variant`` on ``dataset``'s training split and return the fitted estimator."""
    return build_variant(variant).fit(dataset.X_train, dataset.y_train)


def test_accuracy(model, dataset: DemoDataset) -> float:
    """Share of correct predictions on ``dataset``'s test split."""
    return float(np.mean(model.predict(dataset.X_test) == dataset.y_test))


# pytest would otherwise try to collect ``test_accuracy`` when this module is imported
# from a test file.
test_accuracy.__test__ = False  # type: ignore[attr-defined]
