"""The policy's ``slos:`` section: parsing, round trip, its share of alpha, and errors
that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcanary.errors import ConfigError
from modelcanary.policy import (
    AvailabilitySlo,
    BurnRateSettings,
    BurnWindow,
    LatencySlo,
    SloSettings,
    default_policy,
    load_policy,
    policy_from_dict,
)
from modelcanary.policy_yaml import policy_from_dict as parse


def _policy(slos: Any) -> dict[str, Any]:
    return {"steps": [{"traffic_fraction": 0.1, "max_duration_s": 600}], "slos": slos}


SLOS = {
    "availability": {"objective": 0.999},
    "latency": {"threshold_ms": 250, "objective": 0.99},
    "burn_rate": {
        "windows": [
            {"long_s": 300, "short_s": 30, "max_multiple": 14.4},
            {"long_s": 3600, "short_s": 300, "max_multiple": 6},
        ],
        "min_calls": 80,
        "alpha_weight": 2,
    },
}


def test_parses_every_field_and_round_trips() -> None:
    p = policy_from_dict(_policy(SLOS))
    assert p.slos == SloSettings(
        availability=AvailabilitySlo(0.999),
        latency=LatencySlo(250.0, 0.99),
        burn_rate=BurnRateSettings(
            (BurnWindow(300, 30, 14.4), BurnWindow(3600, 300, 6.0)), min_calls=80, alpha_weight=2
        ),
    )
    assert policy_from_dict(yaml.safe_load(yaml.safe_dump(p.to_dict()))) == p
    assert parse(_policy(SLOS)) == p  # the same function, from its own module


def test_defaults_and_absence() -> None:
    p = policy_from_dict(_policy({"availability": {"objective": 0.99}}))
    assert p.slos is not None and p.slos.burn_rate == BurnRateSettings()
    assert p.slos.burn_rate.windows == (BurnWindow(300, 30, 14.4),)
    assert policy_from_dict(_policy(None)).slos is None
    assert default_policy().slos is None and default_policy().slo_alpha == 0.0
    assert policy_from_dict(default_policy().to_dict()) == default_policy()


def test_the_gate_takes_its_weighted_share_of_alpha() -> None:
    p = policy_from_dict(_policy(SLOS))  # no gates; SRM weight 1, SLO weight 2
    assert p.slo_alpha == pytest.approx(p.alpha * 2 / 3)
    assert p.srm_alpha + p.slo_alpha == pytest.approx(p.alpha)
    assert p.planned_duration_s == 600


def test_example_policy_documents_the_section() -> None:
    p = load_policy(Path(__file__).resolve().parents[2] / "examples" / "policy.yaml")
    assert p.slos is not None and {name for name, _ in p.slos.objectives} == {
        "availability",
        "latency",
    }


def _with(**changes: Any) -> dict[str, Any]:
    slos: dict[str, Any] = {"availability": {"objective": 0.999}}
    slos.update(changes)
    return slos


def _window(**changes: Any) -> dict[str, Any]:
    return {"windows": [{"long_s": 300, "short_s": 30, "max_multiple": 14.4, **changes}]}


@pytest.mark.parametrize(
    ("slos", "message"),
    [
        ({}, r"slos: give at least one objective \(availability, latency\)"),
        ([], r"slos: expected a mapping, got list"),
        (_with(errors={"objective": 0.9}), r"slos: unknown field\(s\) \['errors'\]"),
        (_with(availability={"objective": 1.0}), r"slos.availability.objective: 1.0 must be a"),
        (_with(availability={"objective": 0}), r"slos.availability.objective: 0.0 must be a"),
        (_with(availability={"objective": "99.9%"}), r"slos.availability.objective: expected"),
        (_with(availability={}), r"slos.availability.objective: required"),
        (
            _with(availability={"objective": 0.9, "threshold_ms": 5}),
            r"slos.availability: unknown field\(s\) \['threshold_ms'\]",
        ),
        (_with(latency={"objective": 0.99}), r"slos.latency.threshold_ms: required"),
        (
            _with(latency={"objective": 0.99, "threshold_ms": -5}),
            r"slos.latency.threshold_ms: -5.0 must be > 0",
        ),
        (
            _with(burn_rate=_window(short_s=300)),
            r"slos.burn_rate.windows\[0\].short_s: 300 must be shorter than long_s \(300\)",
        ),
        (
            _with(burn_rate=_window(long_s=302)),
            r"slos.burn_rate.windows\[0\].long_s: 302 must be a positive multiple of 5 s",
        ),
        (
            _with(burn_rate=_window(long_s=7200)),
            r"slos.burn_rate.windows\[0\].long_s: 7200 must be at most 3600 s",
        ),
        (
            _with(burn_rate=_window(long_s=300.5)),
            r"slos.burn_rate.windows\[0\].long_s: expected a whole number",
        ),
        (
            _with(burn_rate=_window(max_multiple=0)),
            r"slos.burn_rate.windows\[0\].max_multiple: 0.0 must be > 0",
        ),
        (
            _with(availability={"objective": 0.9}, burn_rate=_window(max_multiple=20)),
            r"slos.burn_rate.windows\[0\].max_multiple: 20 times the error budget of "
            r"availability \(0.1\) is 2, not a share of calls below 1",
        ),
        (
            _with(burn_rate={"windows": [{"long_s": 300, "short_s": 30}]}),
            r"slos.burn_rate.windows\[0\].max_multiple: required",
        ),
        (_with(burn_rate={"windows": []}), r"slos.burn_rate.windows: list at least one window"),
        (_with(burn_rate={"windows": {"long_s": 300}}), r"slos.burn_rate.windows: expected a list"),
        (_with(burn_rate={"min_calls": 0}), r"slos.burn_rate.min_calls: 0 must be >= 1"),
        (_with(burn_rate={"alpha_weight": -1}), r"slos.burn_rate.alpha_weight: -1.0 must be > 0"),
        (_with(burn_rate={"window": []}), r"slos.burn_rate: unknown field\(s\) \['window'\]"),
    ],
)
def test_errors_name_the_field(slos: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_from_dict(_policy(slos))


def test_dataclasses_validate_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="short_s"):
        BurnWindow(long_s=30, short_s=60, max_multiple=2)
    with pytest.raises(ConfigError, match="give at least one objective"):
        SloSettings()
    settings = SloSettings(latency=LatencySlo(100, 0.95))
    assert [name for name, _ in settings.objectives] == ["latency"]
