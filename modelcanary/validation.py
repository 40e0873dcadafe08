"""Validate a request's features against the model's MLflow signature, before any model runs.

An :class:`InputSchema` is built from the ``inputs`` of a version's MLflow signature
(column name, type, ``required``). :meth:`InputSchema.validate` rejects, with a message
that names the field:

- missing features (every column of the signature is needed; optional ones may be null),
- unknown features (not in the signature),
- wrong types: ``double``/``float`` columns take JSON numbers, ``integer``/``long`` take
  integers (or integral numbers such as ``3.0``), ``boolean`` takes true/false, ``string``
  and ``datetime`` take strings, of at most ``max_string_chars`` characters,
- null, NaN and ±Infinity in a required column (an optional column may be null or NaN:
  MLflow's ``required=False`` is how a signature says a value may be missing).

:meth:`InputSchema.json_schema` is the same contract as an OpenAPI 3.0 schema object,
what ``/docs.json`` shows for ``features``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelcanary.errors import InvalidRequestError

DEFAULT_MAX_STRING_CHARS = 10_000
_MAX_NAMED = 10


class FeatureKind(StrEnum):
    """What a feature's value must be; named after JSON Schema types where one fits."""

    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"
    DATETIME = "datetime"
    ANY = "any"


#: MLflow ``DataType`` names -> kinds. Anything else (arrays, objects, binary) is ANY.
MLFLOW_KINDS: Mapping[str, FeatureKind] = {
    "double": FeatureKind.NUMBER,
    "float": FeatureKind.NUMBER,
    "integer": FeatureKind.INTEGER,
    "long": FeatureKind.INTEGER,
    "boolean": FeatureKind.BOOLEAN,
    "string": FeatureKind.STRING,
    "datetime": FeatureKind.DATETIME,
}


@dataclass(frozen=True)
class FeatureSpec:
    """One input column of a model."""

    name: str
    kind: FeatureKind = FeatureKind.NUMBER
    required: bool = True


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")


class InputSchema:
    """The input contract of one model version (see the module docstring)."""

    def __init__(
        self, specs: Iterable[FeatureSpec], max_string_chars: int = DEFAULT_MAX_STRING_CHARS
    ) -> None:
        self.specs: tuple[FeatureSpec, ...] = tuple(specs)
        self.max_string_chars = max_string_chars
        self.names: tuple[str, ...] = tuple(s.name for s in self.specs)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate column names in signature: {self.names}")
        self._name_set = frozenset(self.names)
        #: every column a required number: the common case, validated by a tight loop.
        self._all_required_numbers = all(
            s.kind is FeatureKind.NUMBER and s.required for s in self.specs
        )

    def __repr__(self) -> str:
        return f"InputSchema({len(self.specs)} features)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputSchema) and self.specs == other.specs

    def __hash__(self) -> int:
        return hash(self.specs)

    @property
    def numeric(self) -> bool:
        """Whether every column takes numbers (the model can get one float matrix)."""
        return all(s.kind in (FeatureKind.NUMBER, FeatureKind.INTEGER) for s in self.specs)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_mlflow(cls, inputs: Any) -> InputSchema | None:
        """From an MLflow ``Schema`` of named columns; None for tensor or unnamed inputs."""
        if inputs is None or not inputs.has_input_names():
            return None
        specs = []
        for column in inputs.inputs:
            type_name = getattr(column.type, "name", None) or str(column.type)
            kind = MLFLOW_KINDS.get(str(type_name), FeatureKind.ANY)
            specs.append(FeatureSpec(str(column.name), kind, bool(getattr(column, "required", 1))))
        return cls(specs)

    @classmethod
    def numeric_columns(cls, names: Iterable[str]) -> InputSchema:
        """Every column a required number (a model without a typed signature)."""
        return cls(FeatureSpec(str(n)) for n in names)

    # -- validation -----------------------------------------------------------------
    def validate(self, features: Any, where: str = "features") -> Mapping[str, Any]:
        """``features`` itself if it satisfies the schema; else :class:`InvalidRequestError`."""
        if not isinstance(features, dict):
            raise InvalidRequestError(f"{where}: expected an object of feature name -> value")
        if len(features) != len(self.names) or not self._name_set.issuperset(features):
            self._raise_for_names(features, where)
        if self._all_required_numbers:
            for name in self.names:
                value = features[name]
                kind = type(value)
                if kind is float:
                    if not math.isfinite(value):
                        self._raise_for(name, value, where)
                elif kind is not int:
                    self._raise_for(name, value, where)
            return features
        for spec in self.specs:
            problem = self._problem(spec, features[spec.name])
            if problem:
                raise InvalidRequestError(f"{where}.{spec.name}: {problem}")
        return features

    def _raise_for_names(self, features: Mapping[str, Any], where: str) -> None:
        missing = [n for n in self.names if n not in features]
        extra = [str(k) for k in features if k not in self._name_set]
        parts = []
        if missing:
            parts.append(f"missing feature(s) {_named(missing)}")
        if extra:
            parts.append(f"unknown feature(s) {_named(extra)}")
        raise InvalidRequestError(f"{where}: " + "; ".join(parts))

    def _raise_for(self, name: str, value: Any, where: str) -> None:
        spec = next(s for s in self.specs if s.name == name)
        raise InvalidRequestError(f"{where}.{name}: {self._problem(spec, value)}")

    def _problem(self, spec: FeatureSpec, value: Any) -> str | None:
        """Why ``value`` does not fit ``spec``, or None if it does."""
        if value is None or (type(value) is float and math.isnan(value)):
            if spec.required:
                return "is required: null and NaN are not allowed"
            return None
        kind = spec.kind
        if kind is FeatureKind.NUMBER:
            if type(value) not in (int, float):
                return f"expected a number, got {_json_type(value)}"
            if not math.isfinite(value):
                return "Infinity is not allowed"
        elif kind is FeatureKind.INTEGER:
            if type(value) is float and math.isfinite(value) and value.is_integer():
                return None
            if type(value) is not int:
                return f"expected an integer, got {_json_type(value)}"
        elif kind is FeatureKind.BOOLEAN:
            if type(value) is not bool:
                return f"expected true or false, got {_json_type(value)}"
        elif kind in (FeatureKind.STRING, FeatureKind.DATETIME):
            if type(value) is not str:
                return f"expected a string, got {_json_type(value)}"
            if len(value) > self.max_string_chars:
                return f"longer than {self.max_string_chars} characters"
        return None

    # -- documentation --------------------------------------------------------------
    def json_schema(self) -> dict[str, Any]:
        """The features object as an OpenAPI 3.0 schema."""
        properties: dict[str, Any] = {}
        for spec in self.specs:
            prop: dict[str, Any] = _KIND_SCHEMAS[spec.kind](self.max_string_chars)
            if not spec.required:
                prop["nullable"] = True
            properties[spec.name] = prop
        schema: dict[str, Any] = {
            "type": "object",
            "description": "Feature name -> value, as in the model's MLflow signature",
            "properties": properties,
            "additionalProperties": False,
        }
        if self.names:
            schema["required"] = list(self.names)
        return schema


_KIND_SCHEMAS = {
    FeatureKind.NUMBER: lambda _: {"type": "number"},
    FeatureKind.INTEGER: lambda _: {"type": "integer"},
    FeatureKind.BOOLEAN: lambda _: {"type": "boolean"},
    FeatureKind.STRING: lambda n: {"type": "string", "maxLength": n},
    FeatureKind.DATETIME: lambda n: {"type": "string", "format": "date-time", "maxLength": n},
    FeatureKind.ANY: lambda _: {},
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
