"""Input schemas built from MLflow signatures: what they accept, refuse, and document."""

from __future__ import annotations

import math

import pytest
from mlflow.types.schema import ColSpec, Schema

from modelcanary.errors import InvalidRequestError
from modelcanary.validation import FeatureKind, InputSchema

SIGNATURE = Schema(
    [
        ColSpec("double", "income"),
        ColSpec("long", "age"),
        ColSpec("string", "country"),
        ColSpec("boolean", "member"),
        ColSpec("double", "score", required=False),
    ]
)
GOOD = {"income": 52_000.5, "age": 41, "country": "FR", "member": True, "score": None}


@pytest.fixture
def schema() -> InputSchema:
    built = InputSchema.from_mlflow(SIGNATURE)
    assert built is not None
    return built


def test_kinds_and_requiredness_come_from_the_signature(schema: InputSchema) -> None:
    assert [(s.name, s.kind, s.required) for s in schema.specs] == [
        ("income", FeatureKind.NUMBER, True),
        ("age", FeatureKind.INTEGER, True),
        ("country", FeatureKind.STRING, True),
        ("member", FeatureKind.BOOLEAN, True),
        ("score", FeatureKind.NUMBER, False),
    ]
    assert not schema.numeric


@pytest.mark.parametrize(
    "features",
    [GOOD, {**GOOD, "score": math.nan}, {**GOOD, "score": 0.5}, {**GOOD, "age": 41.0}],
    ids=["null-optional", "nan-optional", "value-optional", "integral-float"],
)
def test_valid_features_pass_unchanged(schema: InputSchema, features: dict) -> None:
    assert schema.validate(features) is features


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "age"}, "features: missing feature(s) 'age'"),
        ({**GOOD, "zip": "75001"}, "features: unknown feature(s) 'zip'"),
        ({**GOOD, "income": "high"}, "features.income: expected a number, got a string"),
        ({**GOOD, "income": math.inf}, "features.income: Infinity is not allowed"),
        ({**GOOD, "income": math.nan}, "features.income: is required"),
        ({**GOOD, "age": 41.5}, "features.age: expected an integer, got a number"),
        ({**GOOD, "age": True}, "features.age: expected an integer, got a boolean"),
        ({**GOOD, "member": 1}, "features.member: expected true or false, got a number"),
        ({**GOOD, "country": 33}, "features.country: expected a string, got a number"),
        ({**GOOD, "country": "x" * 10_001}, "features.country: longer than 10000 characters"),
        ([1, 2], "features: expected an object"),
    ],
)
def test_invalid_features_are_refused_naming_the_field(
    schema: InputSchema, features: object, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        schema.validate(features)
    assert str(info.value).startswith(message), str(info.value)


def test_the_fast_all_numbers_path_refuses_what_the_general_one_does() -> None:
    numbers = InputSchema.numeric_columns(["a", "b"])
    assert numbers.validate({"a": 1, "b": 2.5}) == {"a": 1, "b": 2.5}
    for bad, field in (
        ({"a": "1", "b": 2.0}, "a"),
        ({"a": 1, "b": math.nan}, "b"),
        ({"a": False, "b": 2.0}, "a"),
        ({"a": 1, "b": None}, "b"),
    ):
        with pytest.raises(InvalidRequestError, match=f"features.{field}: "):
            numbers.validate(bad)


def test_the_json_schema_says_what_validate_checks(schema: InputSchema) -> None:
    doc = schema.json_schema()
    assert doc["additionalProperties"] is False
    assert doc["required"] == ["income", "age", "country", "member", "score"]
    assert doc["properties"]["income"] == {"type": "number"}
    assert doc["properties"]["age"] == {"type": "integer"}
    assert doc["properties"]["country"] == {"type": "string", "maxLength": 10_000}
    assert doc["properties"]["member"] == {"type": "boolean"}
    assert doc["properties"]["score"] == {"type": "number", "nullable": True}


def test_unnamed_tensor_signatures_give_no_schema() -> None:
    from mlflow.types.schema import TensorSpec

    assert InputSchema.from_mlflow(Schema([TensorSpec(float_dtype(), (-1, 4))])) is None


def float_dtype() -> object:
    import numpy as np

    return np.dtype("float64")
