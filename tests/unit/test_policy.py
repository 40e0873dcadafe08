"""Policy: defaults, YAML round trip, the alpha split, and validation errors that name
the field and the allowed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcanary.errors import ConfigError
from modelcanary.events import Mode
from modelcanary.policy import (
    Direction,
    Gate,
    MarginType,
    Policy,
    Step,
    TimeoutAction,
    default_policy,
    load_policy,
    policy_from_dict,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def test_default_policy_is_the_demo_policy() -> None:
    p = default_policy()
    assert [s.traffic_fraction for s in p.steps] == [0.05, 0.25, 0.5]
    assert all(s.mode is Mode.CANARY for s in p.steps)
    assert {g.metric for g in p.gates} == {"accuracy", "error_rate", "latency_p95"}
    assert p.on_timeout is TimeoutAction.ROLLBACK
    accuracy = next(g for g in p.gates if g.metric == "accuracy")
    assert accuracy.critical and accuracy.margin == 0.05


def test_to_dict_round_trips_through_yaml() -> None:
    p = load_policy(EXAMPLE)
    again = policy_from_dict(yaml.safe_load(yaml.safe_dump(p.to_dict())))
    assert again == p
    assert policy_from_dict(default_policy().to_dict()) == default_policy()


def test_example_policy_loads_and_kpi_gate_is_canary_only() -> None:
    p = load_policy(EXAMPLE)
    kpi = next(g for g in p.gates if g.metric == "kpi.converted")
    assert kpi.modes == (Mode.CANARY,)
    assert p.modes == {Mode.CANARY, Mode.SHADOW}


def test_alpha_is_split_so_the_shares_sum_to_alpha() -> None:
    p = load_policy(EXAMPLE)
    assert p.slo_alpha > 0
    total = p.srm_alpha + p.slo_alpha
    for g in p.gates:
        judged_in = len(p.modes & set(g.modes))
        total += p.gate_alpha(g) * judged_in
    assert total == pytest.approx(p.alpha)
    drift = next(g for g in p.gates if g.metric == "prediction_drift")
    assert p.gate_alpha(drift) == 0.0


def _base(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"steps": [{"traffic_fraction": 0.1}]}
    raw.update(extra)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            _base(gates=[{"metric": "accuracy", "direction": "up"}]),
            r"gates\[0\]\.direction: 'up' is not one of higher_is_better, lower_is_better",
        ),
        (
            _base(gates=[{"metric": "accuracy", "direction": "lower_is_better"}]),
            r"gates\[0\]\.direction: accuracy is higher_is_better",
        ),
        (
            _base(gates=[{"metric": "kpi.revenue"}]),
            r"gates\[0\]\.direction: required for kpi.revenue; "
            r"allowed: higher_is_better, lower_is_better",
        ),
        (
            _base(gates=[{"metric": "acuracy"}]),
            r"gates\[0\]\.metric: metric 'acuracy' is unknown; allowed: accuracy, log_loss",
        ),
        (_base(gates=[{"metric": "accuracy", "margin": -0.1}]), r"gates\[0\]\.margin"),
        (
            _base(gates=[{"metric": "accuracy", "margin_type": "percent"}]),
            r"gates\[0\]\.margin_type: 'percent' is not one of absolute, relative",
        ),
        (
            _base(gates=[{"metric": "accuracy", "min_margin": 2}]),
            r"gates\[0\]\.min_margin: an absolute floor is allowed only",
        ),
        (
            _base(gates=[{"metric": "rmse", "margin": 0.1}]),
            r"gates\[0\]\.margin_type: rmse gates take a relative margin",
        ),
        (
            _base(gates=[{"metric": "accuracy", "critical": "yes"}]),
            r"gates\[0\]\.critical: expected true or false",
        ),
        (
            _base(gates=[{"metric": "accuracy", "colour": "red"}]),
            r"gates\[0\]: unknown field\(s\) \['colour'\]; allowed:",
        ),
        (
            _base(gates=[{"metric": "accuracy"}, {"metric": "accuracy"}]),
            r"gates: names must be unique",
        ),
        (
            _base(gates=[{"metric": "input_drift", "margin": 2}]),
            r"gates\[0\]\.margin: for input_drift the margin is the tolerated share",
        ),
        (_base(alpha=0), r"alpha: 0.0 must be in \(0, 0.5\]"),
        (_base(alpha="0.05"), r"alpha: expected a number"),
        (_base(on_timeout="promote"), r"on_timeout: 'promote' is not one of rollback, halt"),
        (_base(srm={"prior_strength": -1}), r"srm.prior_strength"),
        (_base(srm={"enable": True}), r"srm: unknown field\(s\) \['enable'\]"),
        (
            _base(drift={"num_method": "magic"}),
            r"drift.num_method: 'magic' is not one of wasserstein",
        ),
        (_base(drift={"min_rows": 5000}), r"drift.min_rows"),
        (_base(colour="red"), r"policy: unknown field\(s\) \['colour'\]"),
        (
            {"steps": [{"traffic_fraction": 1.5}]},
            r"steps\[0\]\.traffic_fraction: 1.5 must be in \(0, 1\]",
        ),
        (
            {"steps": [{"traffic_fraction": 0.1, "mode": "dark"}]},
            r"steps\[0\]\.mode: 'dark' is not one of canary, shadow",
        ),
        (
            {"steps": [{"traffic_fraction": 0.1, "min_duration_s": 10, "max_duration_s": 5}]},
            r"steps\[0\]\.max_duration_s",
        ),
        ({"steps": [{"mode": "canary"}]}, r"steps\[0\]\.traffic_fraction: required"),
        ({"steps": []}, r"steps: a policy needs at least one step"),
        ({"steps": "fast"}, r"steps: expected a list"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_validation_errors_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy_from_dict(raw)


def test_kpi_gates_are_invalid_in_shadow_steps() -> None:
    raw = _base(
        gates=[
            {
                "metric": "kpi.converted",
                "direction": "higher_is_better",
                "modes": ["canary", "shadow"],
            }
        ]
    )
    with pytest.raises(
        ConfigError,
        match=r"gates\[0\]\.modes: kpi.converted depends on what the user was shown"
        r".*allowed: \[canary\]",
    ):
        policy_from_dict(raw)
    shadow_only = {
        "steps": [{"traffic_fraction": 0.1, "mode": "shadow"}],
        "gates": [{"metric": "kpi.converted", "direction": "higher_is_better"}],
    }
    with pytest.raises(ConfigError, match=r"gates\[kpi.converted\]\.modes: .*canary only"):
        policy_from_dict(shadow_only)


def test_gates_can_be_built_directly_and_validate() -> None:
    g = Gate("latency_p95", Direction.LOWER_IS_BETTER, 0.5, MarginType.RELATIVE, min_margin=5.0)
    assert g.label == "latency_p95" and g.statistical
    with pytest.raises(ConfigError, match="direction"):
        Gate("error_rate", Direction.HIGHER_IS_BETTER)
    with pytest.raises(
        ConfigError, match="relative margin of a higher_is_better metric must be < 1"
    ):
        Gate("accuracy", Direction.HIGHER_IS_BETTER, 1.0, MarginType.RELATIVE)
    with pytest.raises(ConfigError, match="alpha"):
        Policy(steps=(Step(0.1),), alpha=0.9)


def test_load_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_policy(listy)
