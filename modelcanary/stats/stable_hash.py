"""The 64-bit hash that must be the same in every process: of unit ids (the SRM test's
distinct units) and request ids (the bottom-k samples' order), kept in snapshots that
other workers and the controller merge.

XXH3-64 (seed 0) of the id's UTF-8 bytes, as an unsigned integer: one C call of ~50 ns,
with nothing to look up. BLAKE2b before it cost ~350 ns a call, and memoising unit ids
(an LRU of 65,536) still cost ~1 us a prediction event once the units no longer fit
in the CPU's caches. Quality is what matters here, not secrecy: ids come from the
application, and a collision merges two units or orders two requests alike, at
probability n / 2**64. Evidence written by a version that hashed with BLAKE2b does not
merge with this one's.
"""

from __future__ import annotations

from xxhash import xxh3_64_intdigest

#: :func:`stable_hash` of bytes, for hot paths that have the bytes (a C function).
stable_hash_bytes = xxh3_64_intdigest


def stable_hash(text: str) -> int:
    """XXH3-64 of ``text``'s UTF-8 bytes (``0 <= hash < 2**64``)."""
    return xxh3_64_intdigest(text.encode())
