"""Bottom-k reservoir: merge equals one pass exactly, bounded, roughly uniform."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcanary.stats.reservoir import Reservoir, sample_key

ids = st.lists(st.text(min_size=1, max_size=8), max_size=60, unique=True)


@settings(max_examples=150, deadline=None)
@given(ids, st.integers(0, 60), st.integers(1, 20))
def test_merge_equals_one_pass(keys: list[str], cut: int, size: int) -> None:
    whole, left, right = Reservoir(size), Reservoir(size), Reservoir(size)
    for i, k in enumerate(keys):
        whole.update(k, {"id": k})
        (left if i < cut else right).update(k, {"id": k})
    merged = left.merge(right)
    assert merged.items() == whole.items()
    assert merged.seen == whole.seen
    assert len(merged) == min(size, len(keys))


def test_sample_is_roughly_uniform_over_arrival_order() -> None:
    res = Reservoir(1000)
    for i in range(20_000):
        res.update(f"r{i}", i)
    late = sum(1 for v in res.items() if v >= 10_000)
    assert len(res) == 1000
    assert 430 <= late <= 570  # Binomial(1000, 0.5) +- 4.4 sd


@settings(max_examples=100, deadline=None)
@given(ids, st.integers(0, 60), st.integers(1, 20))
def test_a_pickled_sample_goes_on_as_if_never_pickled(keys: list[str], cut: int, size: int) -> None:
    """The pickled state is the sample itself (what snapshots of earlier versions hold);
    what is derived from it is rebuilt, and offers go on as in one pass."""
    whole, part = Reservoir(size), Reservoir(size)
    for k in keys[:cut]:
        whole.offer(k, sample_key(k), dict, {"id": k})
        part.offer(k, sample_key(k), dict, {"id": k})
    assert set(part.__getstate__()) == {"size", "seen", "_heap", "_items"}
    part = pickle.loads(pickle.dumps(part))
    for k in keys[cut:]:
        whole.offer(k, sample_key(k), dict, {"id": k})
        part.offer(k, sample_key(k), dict, {"id": k})
    assert part.items() == whole.items() and part.seen == whole.seen
