from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.join import Joiner


def pred(
    request_id: str, arm: Arm = Arm.CHAMPION, mode: Mode = Mode.CANARY, served: bool = True
) -> PredictionEvent:
    return PredictionEvent(
        model="m",
        request_id=request_id,
        version="1",
        arm=arm,
        mode=mode,
        served=served,
        prediction=1,
    )


def outcome(request_id: str, label: int = 1) -> OutcomeEvent:
    return OutcomeEvent(model="m", request_id=request_id, label=label)


def test_outcome_after_prediction_joins() -> None:
    joiner = Joiner()
    assert joiner.add_prediction(pred("a"), now=0) == []
    [joined] = joiner.add_outcome(outcome("a"), now=500)
    assert joined.outcome is not None and joined.served is not None
    assert joiner.open_count == 0


def test_outcome_before_prediction_joins() -> None:
    joiner = Joiner()
    assert joiner.add_outcome(outcome("a"), now=0) == []
    [joined] = joiner.add_prediction(pred("a"), now=1)
    assert joined.request_id == "a"


def test_late_outcome_within_ttl_still_joins() -> None:
    joiner = Joiner(ttl_s=3600)
    joiner.add_prediction(pred("a"), now=0)
    [joined] = joiner.add_outcome(outcome("a"), now=3599)
    assert joined.outcome is not None


def test_shadow_waits_for_both_arms() -> None:
    joiner = Joiner()
    joiner.add_prediction(pred("a", Arm.CHAMPION, Mode.SHADOW), now=0)
    assert joiner.add_outcome(outcome("a"), now=1) == []
    [joined] = joiner.add_prediction(pred("a", Arm.CHALLENGER, Mode.SHADOW, served=False), now=2)
    assert set(joined.predictions) == {Arm.CHAMPION, Arm.CHALLENGER}
    assert joined.mode is Mode.SHADOW


def test_expired_predictions_are_released_without_outcome_and_orphans_dropped() -> None:
    joiner = Joiner(ttl_s=10)
    joiner.add_prediction(pred("a"), now=0)
    joiner.add_outcome(outcome("orphan"), now=1)
    [released] = joiner.expire(now=11)
    assert released.request_id == "a" and released.outcome is None
    assert joiner.open_count == 0
    assert joiner.counters.expired_without_outcome == 1
    assert joiner.counters.dropped_orphan_outcomes == 1


def test_duplicates_are_counted_once() -> None:
    joiner = Joiner()
    p = pred("a")
    joiner.add_prediction(p, now=0)
    joiner.add_prediction(p, now=0)
    assert len(joiner.add_outcome(outcome("a"), now=1)) == 1
    assert joiner.add_outcome(outcome("a"), now=2) == []
    assert joiner.add_prediction(p, now=3) == []
    assert joiner.counters.duplicates == 3
    assert joiner.open_count == 0


def test_open_joins_are_bounded() -> None:
    joiner = Joiner(max_open=100)
    released = []
    for i in range(1_000):
        released += joiner.add_prediction(pred(f"r{i}"), now=i * 0.001)
    assert joiner.open_count == 100
    assert len(released) == 900
