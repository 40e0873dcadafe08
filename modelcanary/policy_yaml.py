"""Reading a policy from YAML or JSON: field names checked, values typed, errors named.

Every function raises :class:`~modelcanary.errors.ConfigError` with the path of the
offending field (``steps[1].traffic_fraction``, ``slos.burn_rate.windows[0].long_s``)
and, for choices, the allowed values; the dataclasses of :mod:`modelcanary.policy`
validate the values themselves. ``from modelcanary.policy import load_policy,
policy_from_dict`` works too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from modelcanary.errors import ConfigError
from modelcanary.events import Mode
from modelcanary.policy import (
    AvailabilitySlo,
    BurnRateSettings,
    BurnWindow,
    Direction,
    DriftSettings,
    Gate,
    LatencySlo,
    MarginType,
    Policy,
    SloSettings,
    SrmSettings,
    Step,
    TimeoutAction,
    metric_spec,
)


def _enum(enum: type[StrEnum], raw: Any, where: str) -> Any:
    try:
        return enum(raw)
    except ValueError as exc:
        allowed = ", ".join(m.value for m in enum)  # type: ignore[attr-defined]
        raise ConfigError(f"{where}: {raw!r} is not one of {allowed}") from exc


def _check_keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def _number(raw: Any, where: str, kind: type = float) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{where}: expected a number, got {raw!r}")
    if kind is int:
        if isinstance(raw, float) and not raw.is_integer():
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}")
        return int(raw)
    return float(raw)


def _bool(raw: Any, where: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    return raw


def _step(raw: Any, index: int) -> Step:
    where = f"steps[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    allowed = {
        "traffic_fraction", "mode", "min_samples", "min_duration_s", "max_duration_s",
        "requires_approval",
    }  # fmt: skip
    _check_keys(raw, allowed, where)
    if "traffic_fraction" not in raw:
        raise ConfigError(f"{where}.traffic_fraction: required")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "mode":
            values[key] = _enum(Mode, value, f"{where}.mode")
        elif key == "requires_approval":
            values[key] = _bool(value, f"{where}.{key}")
        elif key == "min_samples":
            values[key] = _number(value, f"{where}.{key}", int)
        else:
            values[key] = _number(value, f"{where}.{key}")
    try:
        return Step(**values)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("steps[]", where)) from exc


_GATE_FIELDS = {f.name for f in fields(Gate)}


def _gate(raw: Any, index: int) -> Gate:
    where = f"gates[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    _check_keys(raw, _GATE_FIELDS, where)
    if "metric" not in raw or not isinstance(raw["metric"], str):
        raise ConfigError(f"{where}.metric: required, a metric name")
    try:
        spec = metric_spec(raw["metric"])
    except ConfigError as exc:
        raise ConfigError(f"{where}.metric: {exc}") from exc
    values: dict[str, Any] = {"metric": raw["metric"]}
    if "direction" in raw:
        values["direction"] = _enum(Direction, raw["direction"], f"{where}.direction")
    elif spec.direction is None:
        raise ConfigError(
            f"{where}.direction: required for {spec.name}; allowed: higher_is_better, "
            "lower_is_better"
        )
    else:
        values["direction"] = spec.direction
    for key in ("margin", "min_margin", "alpha_weight"):
        if key in raw:
            values[key] = _number(raw[key], f"{where}.{key}")
    if "design_samples" in raw and raw["design_samples"] is not None:
        values["design_samples"] = _number(raw["design_samples"], f"{where}.design_samples", int)
    if "margin_type" in raw:
        values["margin_type"] = _enum(MarginType, raw["margin_type"], f"{where}.margin_type")
    if "critical" in raw:
        values["critical"] = _bool(raw["critical"], f"{where}.critical")
    if "name" in raw and raw["name"] is not None:
        if not isinstance(raw["name"], str) or not raw["name"]:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        values["name"] = raw["name"]
    if "modes" in raw:
        modes = raw["modes"]
        if not isinstance(modes, list):
            raise ConfigError(f"{where}.modes: expected a list of canary, shadow")
        values["modes"] = tuple(_enum(Mode, m, f"{where}.modes") for m in modes)
    elif spec.user_facing:
        values["modes"] = (Mode.CANARY,)
    try:
        return Gate(**values)
    except ConfigError as exc:
        raise ConfigError(
            str(exc).replace(f"gates[{values.get('name') or spec.name}]", where)
        ) from exc


def _settings(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    _check_keys(raw, set(known), where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        if isinstance(default, bool):
            values[key] = _bool(value, f"{where}.{key}")
        elif isinstance(default, int):
            values[key] = _number(value, f"{where}.{key}", int)
        elif isinstance(default, float):
            values[key] = _number(value, f"{where}.{key}")
        elif not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
        else:
            values[key] = value
    return cls(**values)


def _mapping(
    raw: Any, where: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> Mapping[str, Any]:
    """``raw`` if it is a mapping with only ``allowed`` keys and every ``required`` one."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    _check_keys(raw, allowed, where)
    missing = sorted(set(required) - set(raw))
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required")
    return raw


def _burn_window(raw: Any, index: int) -> BurnWindow:
    where = f"slos.burn_rate.windows[{index}]"
    keys = {"long_s", "short_s", "max_multiple"}
    raw = _mapping(raw, where, keys, keys)
    try:
        return BurnWindow(
            long_s=_number(raw["long_s"], f"{where}.long_s", int),
            short_s=_number(raw["short_s"], f"{where}.short_s", int),
            max_multiple=_number(raw["max_multiple"], f"{where}.max_multiple"),
        )
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("slos.burn_rate.windows[]", where)) from exc


def _burn_rate(raw: Any) -> BurnRateSettings:
    where = "slos.burn_rate"
    raw = _mapping(raw, where, {"windows", "min_calls", "alpha_weight"})
    values: dict[str, Any] = {}
    if "windows" in raw:
        if not isinstance(raw["windows"], list):
            raise ConfigError(
                f"{where}.windows: expected a list of {{long_s, short_s, max_multiple}}"
            )
        values["windows"] = tuple(_burn_window(w, i) for i, w in enumerate(raw["windows"]))
    if "min_calls" in raw:
        values["min_calls"] = _number(raw["min_calls"], f"{where}.min_calls", int)
    if "alpha_weight" in raw:
        values["alpha_weight"] = _number(raw["alpha_weight"], f"{where}.alpha_weight")
    return BurnRateSettings(**values)


def _slos(raw: Any) -> SloSettings | None:
    if raw is None:
        return None
    raw = _mapping(raw, "slos", {"availability", "latency", "burn_rate"})
    values: dict[str, Any] = {}
    if raw.get("availability") is not None:
        where = "slos.availability"
        a = _mapping(raw["availability"], where, {"objective"}, {"objective"})
        values["availability"] = AvailabilitySlo(_number(a["objective"], f"{where}.objective"))
    if raw.get("latency") is not None:
        where = "slos.latency"
        keys = {"threshold_ms", "objective"}
        lat = _mapping(raw["latency"], where, keys, keys)
        values["latency"] = LatencySlo(
            threshold_ms=_number(lat["threshold_ms"], f"{where}.threshold_ms"),
            objective=_number(lat["objective"], f"{where}.objective"),
        )
    if "burn_rate" in raw:
        values["burn_rate"] = _burn_rate(raw["burn_rate"])
    return SloSettings(**values)


_POLICY_FIELDS = {f.name for f in fields(Policy)}


def policy_from_dict(raw: Mapping[str, Any]) -> Policy:
    """Build and validate a policy from parsed YAML/JSON."""
    _check_keys(raw, _POLICY_FIELDS, "policy")
    steps = raw.get("steps")
    if not isinstance(steps, list):
        raise ConfigError("steps: expected a list of steps")
    gates = raw.get("gates", [])
    if not isinstance(gates, list):
        raise ConfigError("gates: expected a list of gates")
    values: dict[str, Any] = {
        "steps": tuple(_step(s, i) for i, s in enumerate(steps)),
        "gates": tuple(_gate(g, i) for i, g in enumerate(gates)),
    }
    if "alpha" in raw:
        values["alpha"] = _number(raw["alpha"], "alpha")
    if "on_timeout" in raw:
        values["on_timeout"] = _enum(TimeoutAction, raw["on_timeout"], "on_timeout")
    for key in ("design_samples", "min_samples_per_arm"):
        if key in raw:
            values[key] = _number(raw[key], key, int)
    if "srm" in raw:
        values["srm"] = _settings(SrmSettings, raw["srm"], "srm")
    if "drift" in raw:
        values["drift"] = _settings(DriftSettings, raw["drift"], "drift")
    if "slos" in raw:
        values["slos"] = _slos(raw["slos"])
    return Policy(**values)


def load_policy(path: Path) -> Policy:
    """Read, parse and validate a policy YAML file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"policy file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"policy file {path}: expected a mapping at the top level")
    return policy_from_dict(raw)
