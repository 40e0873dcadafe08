"""Rollout policy: the steps a rollout walks through. Loaded from YAML, validated, frozen.

Example::

    steps:
      - {traffic_fraction: 0.05, min_samples: 200, min_duration_s: 10, max_duration_s: 600}
      - {traffic_fraction: 0.25, min_samples: 400, min_duration_s: 10, max_duration_s: 600}
      - {traffic_fraction: 0.50, min_samples: 800, min_duration_s: 10, max_duration_s: 600}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from modelcanary.errors import ConfigError
from modelcanary.events import Mode


@dataclass(frozen=True)
class Step:
    """One stage of a rollout: how much traffic the challenger gets and for how long."""

    traffic_fraction: float
    mode: Mode = Mode.CANARY
    min_samples: int = 200
    min_duration_s: float = 0.0
    max_duration_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0.0 < self.traffic_fraction <= 1.0:
            raise ConfigError(
                f"steps[].traffic_fraction: {self.traffic_fraction} must be in (0, 1]"
            )
        if self.min_samples < 0:
            raise ConfigError(f"steps[].min_samples: {self.min_samples} must be >= 0")
        if self.min_duration_s < 0 or self.max_duration_s <= self.min_duration_s:
            raise ConfigError(
                "steps[].max_duration_s must be greater than min_duration_s >= 0 "
                f"(got {self.min_duration_s} and {self.max_duration_s})"
            )


@dataclass(frozen=True)
class Policy:
    """How a rollout proceeds. The judge's gates extend this."""

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("steps: a policy needs at least one step")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_policy() -> Policy:
    return Policy(
        steps=(
            Step(traffic_fraction=0.05),
            Step(traffic_fraction=0.25),
            Step(traffic_fraction=0.50),
        )
    )


def _step(raw: Any, index: int) -> Step:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"steps[{index}]: expected a mapping, got {type(raw).__name__}")
    allowed = {"traffic_fraction", "mode", "min_samples", "min_duration_s", "max_duration_s"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(
            f"steps[{index}]: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    values = dict(raw)
    if "mode" in values:
        try:
            values["mode"] = Mode(values["mode"])
        except ValueError as exc:
            raise ConfigError(
                f"steps[{index}].mode: {values['mode']!r} is not one of canary, shadow"
            ) from exc
    try:
        return Step(**values)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("steps[]", f"steps[{index}]")) from exc
    except TypeError as exc:
        raise ConfigError(f"steps[{index}]: {exc}") from exc


def policy_from_dict(raw: Mapping[str, Any]) -> Policy:
    steps = raw.get("steps")
    if not isinstance(steps, list):
        raise ConfigError("steps: expected a list of steps")
    return Policy(steps=tuple(_step(s, i) for i, s in enumerate(steps)))


def load_policy(path: Path) -> Policy:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"policy file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"policy file {path}: expected a mapping at the top level")
    return policy_from_dict(raw)
