"""Mergeable uniform sample of bounded size: bottom-k sampling by a stable hash.

Each item is keyed by a 64-bit hash of its id (the request id); the sample is the k
items with the smallest keys (Cohen & Kaplan 2007, "Summarizing data using bottom-k
sketches", PODC). Hash order is independent of the data, so the sample is uniform
without replacement, and the bottom k of a union is the bottom k of the parts' bottom
k: merging two samples equals one pass over the union, exactly, whatever the order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from modelcanary.stats.stable_hash import stable_hash

#: The 64-bit hash that orders items (the same for every process, so samples merge).
sample_key = stable_hash
_key = sample_key
_ABOVE_ALL = 1 << 64  # above every 64-bit key


class Reservoir:
    """Up to ``size`` items, a uniform sample of everything offered; ``seen`` counts all."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"size {size} must be >= 1")
        self.size = size
        self.seen = 0
        self._heap: list[tuple[int, str]] = []  # (-key, id): a max-heap of kept keys
        self._items: dict[str, Any] = {}
        self._bound = _ABOVE_ALL  # only keys below this can be kept: the largest kept when full

    def update(self, item_id: str, item: Any) -> Reservoir:
        self.seen += 1
        if item_id in self._items:
            return self
        self._offer(_key(item_id), item_id, item)
        return self

    def offer(self, item_id: str, key: int, make: Callable[[Any], Any], arg: Any) -> Reservoir:
        """``update(item_id, make(arg))`` with ``key == sample_key(item_id)`` computed by the
        caller (once for several samples), and the item built only if it is kept (most
        offers are not, once the sample is full)."""
        self.seen += 1
        if key < self._bound and item_id not in self._items:
            self._offer(key, item_id, make(arg))
        return self

    def _offer(self, key: int, item_id: str, item: Any) -> None:
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, (-key, item_id))
            self._items[item_id] = item
        elif key < -self._heap[0][0]:
            _, dropped = heapq.heapreplace(self._heap, (-key, item_id))
            del self._items[dropped]
            self._items[item_id] = item
        else:
            return
        if len(self._heap) >= self.size:
            self._bound = -self._heap[0][0]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_bound"]  # derived: the pickled shape stays what it was
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bound = -self._heap[0][0] if len(self._heap) >= self.size else _ABOVE_ALL

    def merge(self, other: Reservoir) -> Reservoir:
        self.seen += other.seen
        for neg_key, item_id in other._heap:
            if item_id not in self._items:
                self._offer(-neg_key, item_id, other._items[item_id])
        return self

    def items(self) -> list[Any]:
        """The sampled items in hash order (deterministic for a given set)."""
        return [self._items[i] for _, i in sorted(self._heap, reverse=True)]

    def ids(self) -> set[str]:
        return set(self._items)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items())
