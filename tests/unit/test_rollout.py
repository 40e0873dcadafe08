import itertools

import pytest

from modelcanary.errors import RolloutError
from modelcanary.events import Action
from modelcanary.policy import Policy, Step
from modelcanary.rollout import (
    LEGAL_TRANSITIONS,
    Rollout,
    RolloutState,
    apply_action,
    check_transition,
    new_rollout,
)

POLICY = Policy(steps=(Step(0.05), Step(0.25), Step(0.5)))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (c, t)
        for c, t in itertools.product(RolloutState, RolloutState)
        if t not in LEGAL_TRANSITIONS[c]
    ],
    ids=lambda s: s.value,
)
def test_every_illegal_transition_raises_with_the_current_state(
    current: RolloutState, target: RolloutState
) -> None:
    with pytest.raises(RolloutError, match=current.value):
        check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c in RolloutState for t in LEGAL_TRANSITIONS[c]],
    ids=lambda s: s.value,
)
def test_every_legal_transition_passes(current: RolloutState, target: RolloutState) -> None:
    check_transition(current, target)


def test_walks_every_step_then_promotes() -> None:
    r = new_rollout("m", "1", "2", POLICY, now=0)
    assert (r.label, r.traffic_fraction) == ("running:0", 0.05)
    r = apply_action(r, Action.ADVANCE, POLICY, 10, "ok")
    r = apply_action(r, Action.ADVANCE, POLICY, 20, "ok")
    assert (r.label, r.traffic_fraction, r.step_started_at) == ("running:2", 0.5, 20)
    with pytest.raises(RolloutError, match="last step"):
        apply_action(r, Action.ADVANCE, POLICY, 30, "ok")
    r = apply_action(r, Action.PROMOTE, POLICY, 30, "ok")
    assert r.label == "promoted" and r.traffic_fraction == 1.0
    with pytest.raises(RolloutError, match="already promoted"):
        apply_action(r, Action.ROLLBACK, POLICY, 40, "too late")


def test_persisted_form_round_trips() -> None:
    r = new_rollout("m", "1", "2", POLICY, now=5)
    assert Rollout.from_json(r.to_json()) == r
