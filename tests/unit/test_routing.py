import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcanary.errors import RoutingError
from modelcanary.events import Arm, Mode
from modelcanary.routing import RoutingTable, assign_arm, bucket_position

GOLDEN = Path(__file__).parent / "golden" / "routing_cases.json"


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.9])
def test_fraction_within_tolerance(fraction: float) -> None:
    n = 20_000
    hits = sum(assign_arm(f"user-{i}", "salt-a", fraction) is Arm.CHALLENGER for i in range(n))
    # 5 standard deviations of a binomial proportion: fails only on a real bias.
    sd = (fraction * (1 - fraction) / n) ** 0.5
    assert abs(hits / n - fraction) < 5 * sd


@given(st.text(min_size=1), st.text())
def test_fractions_zero_and_one_are_exact(unit: str, salt: str) -> None:
    assert assign_arm(unit, salt, 0.0) is Arm.CHAMPION
    assert assign_arm(unit, salt, 1.0) is Arm.CHALLENGER


@given(st.text(min_size=1), st.text(), st.floats(0, 1), st.floats(0, 1))
def test_raising_fraction_never_moves_a_unit_back(unit: str, salt: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if assign_arm(unit, salt, low) is Arm.CHALLENGER:
        assert assign_arm(unit, salt, high) is Arm.CHALLENGER


def test_sticky_and_salted() -> None:
    arms = [assign_arm(f"u{i}", "rollout-1", 0.5) for i in range(200)]
    assert arms == [assign_arm(f"u{i}", "rollout-1", 0.5) for i in range(200)]
    other = [assign_arm(f"u{i}", "rollout-2", 0.5) for i in range(200)]
    assert arms != other


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval_is_refused(fraction: float) -> None:
    with pytest.raises(RoutingError):
        assign_arm("u", "s", fraction)


def test_shadow_serves_champion_and_mirrors_the_fraction() -> None:
    table = RoutingTable(rollout_id="r", mode=Mode.SHADOW, traffic_fraction=0.3, step=0)
    routes = [table.route(f"req-{i}") for i in range(5_000)]
    assert all(r.served_by is Arm.CHAMPION for r in routes)
    mirrored = sum(r.mirror_to_challenger for r in routes) / len(routes)
    assert 0.27 < mirrored < 0.33


def test_no_rollout_routes_everyone_to_champion() -> None:
    table = RoutingTable()
    assert not table.active
    assert table.route("anyone").served_by is Arm.CHAMPION


def test_golden_cases_pin_the_hash() -> None:
    """A refactor must not silently reshuffle users between arms."""
    cases = json.loads(GOLDEN.read_text())
    for case in cases:
        assert bucket_position(case["unit"], case["salt"]) == pytest.approx(case["position"])
        assert assign_arm(case["unit"], case["salt"], case["fraction"]).value == case["arm"]
