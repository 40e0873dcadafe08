"""Deterministic traffic assignment: the same unit always lands on the same arm.

A unit key (the unit id when the caller gives one, else the request id) and the
rollout's salt are hashed with XXH3-64; the hash's top 53 bits times 2**-53 give a
uniform position ``u`` in [0, 1). The unit goes to the challenger iff ``u < fraction``.
So fraction 0 never picks the challenger and fraction 1 always does, raising the
fraction only moves units from champion to challenger (never back), and a new salt
(a new rollout) reshuffles everyone independently of the previous rollout.

Every request is routed, so the hash is XXH3 (one small C call) rather than SHA-256:
through OpenSSL 3, SHA-256 of a few dozen bytes cost 2.3 us next to a model call (its
code and tables cold in the caches) against 0.8 us. Nothing here needs a cryptographic
hash: the salt is not secret, and units only need to be spread evenly. Changing the
hash reassigns units, so replicas of one rollout must all run the same version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelcanary.errors import RoutingError
from modelcanary.events import Arm, Mode
from modelcanary.stats.stable_hash import stable_hash_bytes

_UNIT = 2.0**-53


def bucket_position(unit_key: str, salt: str) -> float:
    """Uniform position in [0, 1) of ``unit_key`` for this salt: the hash's top 53 bits
    (a float's precision, so that no hash rounds up to 1.0) times 2**-53."""
    return _position(f"{salt}\x1f{unit_key}")


def _position(salted_key: str) -> float:
    """:func:`bucket_position` of ``salt + "\\x1f" + unit_key``, already joined."""
    return (stable_hash_bytes(salted_key.encode()) >> 11) * _UNIT


def assign_arm(unit_key: str, salt: str, fraction: float) -> Arm:
    """The arm that serves ``unit_key`` when ``fraction`` of units go to the challenger."""
    if not 0.0 <= fraction <= 1.0:
        raise RoutingError(f"traffic fraction {fraction} is outside [0, 1]")
    return Arm.CHALLENGER if _to_challenger(unit_key, salt, fraction) else Arm.CHAMPION


def _to_challenger(unit_key: str, salt: str, fraction: float) -> bool:
    """The assignment rule itself (``fraction`` already checked): below it, the challenger."""
    return bucket_position(unit_key, salt) < fraction


@dataclass(frozen=True)
class Route:
    """Which arm answers the user, and whether the challenger also gets a mirrored copy."""

    served_by: Arm
    mirror_to_challenger: bool


@dataclass(frozen=True)
class RoutingTable:
    """The split a router applies: pure data, swapped atomically when a decision lands."""

    rollout_id: str | None = None
    mode: Mode = Mode.CANARY
    traffic_fraction: float = 0.0
    step: int | None = None
    #: Whether any traffic goes to the challenger (a rollout with a fraction above 0).
    #: Fields, not properties, because every request reads them (a property is a
    #: Python call).
    active: bool = field(init=False, repr=False, compare=False)
    _salt_prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.traffic_fraction <= 1.0:
            raise RoutingError(f"traffic fraction {self.traffic_fraction} is outside [0, 1]")
        active = self.rollout_id is not None and self.traffic_fraction > 0.0
        object.__setattr__(self, "active", active)
        object.__setattr__(self, "_salt_prefix", f"{self.rollout_id or ''}\x1f")

    def route(self, unit_key: str) -> Route:
        """Canary: a fraction of units is served by the challenger. Shadow: the champion
        serves everyone and a fraction of requests is mirrored to the challenger."""
        if not self.active:
            return _CHAMPION_ONLY
        # the salt's prefix is joined once per table; the table checked its fraction once:
        # no need for assign_arm's check per request
        challenger = _position(self._salt_prefix + unit_key) < self.traffic_fraction
        if self.mode is Mode.SHADOW:
            return _MIRRORED if challenger else _CHAMPION_ONLY
        return _CHALLENGER_ONLY if challenger else _CHAMPION_ONLY


# The three routes there are, made once: route() runs for every request.
_CHAMPION_ONLY = Route(Arm.CHAMPION, mirror_to_challenger=False)
_CHALLENGER_ONLY = Route(Arm.CHALLENGER, mirror_to_challenger=False)
_MIRRORED = Route(Arm.CHAMPION, mirror_to_challenger=True)
