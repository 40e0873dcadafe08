"""The demo dataset is deterministic and the three variants are ordered as the demo needs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelcanary.demo_data import (
    BAD_VARIANT_FEATURES,
    VARIANTS,
    load_demo_dataset,
    snake_case,
    test_accuracy,
    train_variant,
)
from modelcanary.errors import ConfigError


def test_split_is_deterministic_per_seed() -> None:
    a, b, other = load_demo_dataset(0), load_demo_dataset(0), load_demo_dataset(1)
    pd.testing.assert_frame_equal(a.X_train, b.X_train)
    pd.testing.assert_frame_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not a.X_test.equals(other.X_test)


def test_split_is_stratified_and_about_thirty_percent() -> None:
    data = load_demo_dataset()
    n_test, n_train = len(data.X_test), len(data.X_train)
    assert n_test + n_train == 569
    assert 0.28 <= n_test / (n_test + n_train) <= 0.32
    assert abs(data.y_test.mean() - data.y_train.mean()) < 0.01
    assert set(np.unique(data.y_train)) == {0, 1}


def test_feature_names_are_snake_case_identifiers() -> None:
    data = load_demo_dataset()
    assert len(data.feature_names) == 30
    assert data.feature_names[:2] == ["mean_radius", "mean_texture"]
    assert "worst_concave_points" in data.feature_names
    for name in data.feature_names:
        assert name.isidentifier() and name == name.lower(), name
    assert list(data.X_train.columns) == data.feature_names
    assert set(BAD_VARIANT_FEATURES) <= set(data.feature_names)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mean concave points", "mean_concave_points"),
        ("Area-Error ", "area_error"),
        ("3d x", "f_3d_x"),
    ],
)
def test_snake_case(raw: str, expected: str) -> None:
    assert snake_case(raw) == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bad_variant_is_clearly_worse_and_good_is_not(seed: int) -> None:
    data = load_demo_dataset(seed)
    accuracy = {v: test_accuracy(train_variant(v, data), data) for v in VARIANTS}
    assert accuracy["baseline"] >= 0.93
    assert accuracy["good"] >= accuracy["baseline"] - 0.01
    assert 0.70 <= accuracy["bad"] <= 0.86
    assert accuracy["baseline"] - accuracy["bad"] >= 0.10


def test_every_variant_takes_all_features_and_scores_probabilities() -> None:
    data = load_demo_dataset()
    for variant in VARIANTS:
        model = train_variant(variant, data)
        assert list(model.feature_names_in_) == data.feature_names
        proba = model.predict_proba(data.X_test)[:, 1]
        assert ((proba >= 0) & (proba <= 1)).all()


def test_training_is_deterministic() -> None:
    data = load_demo_dataset()
    for variant in VARIANTS:
        first = train_variant(variant, data).predict_proba(data.X_test)
        second = train_variant(variant, data).predict_proba(data.X_test)
        np.testing.assert_array_equal(first, second)


def test_unknown_variant_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="variant"):
        train_variant("great", load_demo_dataset())
