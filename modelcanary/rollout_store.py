"""Persist rollouts in MLflow: one JSON tag for the rollout, one for its policy.

The registered model carries ``modelcanary.rollout`` (the current or last rollout, see
:class:`~modelcanary.rollout.Rollout`) and ``modelcanary.policy`` (the policy it runs
under). Writing the rollout is a single tag write, so a state change is atomic.
Version tags record what happened to a version: ``modelcanary.status`` is ``retired``
or ``rolled_back``, with ``modelcanary.reason`` and ``modelcanary.at``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from modelcanary.errors import RegistryError
from modelcanary.policy import Policy, policy_from_dict
from modelcanary.rollout import Rollout, RolloutState

ROLLOUT_TAG = "modelcanary.rollout"
POLICY_TAG = "modelcanary.policy"
STATUS_TAG = "modelcanary.status"
REASON_TAG = "modelcanary.reason"
AT_TAG = "modelcanary.at"
ROLLOUT_ID_TAG = "modelcanary.rollout_id"

CHAMPION = "champion"
CHALLENGER = "challenger"

log = logging.getLogger(__name__)


class RegistryPort(Protocol):
    """The slice of :class:`modelcanary.registry.Registry` the control plane needs."""

    def list_models(self) -> list[str]: ...
    def models_tagged(self, tag: str) -> dict[str, str]: ...
    def alias_version(self, name: str, alias: str) -> str | None: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def model_tags(self, name: str) -> dict[str, str]: ...
    def aliases_and_tags(self, name: str) -> tuple[dict[str, str], dict[str, str]]: ...
    def set_model_tags(self, name: str, tags: dict[str, str]) -> None: ...
    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None: ...


@dataclass(frozen=True)
class ModelSnapshot:
    """What a router needs to know about a model, read in one go."""

    champion_version: str | None
    challenger_version: str | None
    rollout: Rollout | None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RolloutStore:
    def __init__(self, registry: RegistryPort) -> None:
        self.registry = registry

    def load(self, model: str) -> Rollout | None:
        raw = self.registry.model_tags(model).get(ROLLOUT_TAG)
        return self._decode(model, raw)

    def active_models(self) -> list[str]:
        """Registered models whose rollout is in progress (running, paused, halted), sorted.

        How the judge finds every rollout, including one no traffic reaches: one registry
        search for the models carrying a rollout tag, however many models are registered.
        A model whose rollout tag does not decode is skipped (and logged); MLflow being
        unreachable raises :class:`RegistryUnavailableError`.
        """
        active = []
        for name, raw in sorted(self.registry.models_tagged(ROLLOUT_TAG).items()):
            try:
                rollout = self._decode(name, raw)
            except RegistryError as exc:
                log.warning("skipping %s when listing rollouts: %s", name, exc)
                continue
            if rollout is not None and not rollout.state.terminal:
                active.append(name)
        return active

    def load_for_judging(self, model: str) -> tuple[Rollout | None, Policy | None]:
        """The rollout, and its policy only if it is running: one registry read per tick."""
        tags = self.registry.model_tags(model)
        rollout = self._decode(model, tags.get(ROLLOUT_TAG))
        if rollout is None or rollout.state is not RolloutState.RUNNING:
            return rollout, None
        return rollout, self._decode_policy(model, tags.get(POLICY_TAG))

    def load_policy(self, model: str) -> Policy | None:
        return self._decode_policy(model, self.registry.model_tags(model).get(POLICY_TAG))

    def _decode_policy(self, model: str, raw: str | None) -> Policy | None:
        if raw is None:
            return None
        try:
            return policy_from_dict(json.loads(raw))
        except ValueError as exc:
            raise RegistryError(
                f"tag {POLICY_TAG} of {model} is not a valid policy: {exc}"
            ) from exc

    def snapshot(self, model: str) -> ModelSnapshot:
        aliases, tags = self.registry.aliases_and_tags(model)
        return ModelSnapshot(
            champion_version=aliases.get(CHAMPION),
            challenger_version=aliases.get(CHALLENGER),
            rollout=self._decode(model, tags.get(ROLLOUT_TAG)),
        )

    def save(self, rollout: Rollout) -> None:
        self.registry.set_model_tags(rollout.model, {ROLLOUT_TAG: rollout.to_json()})

    def save_policy(self, model: str, policy: Policy) -> None:
        self.registry.set_model_tags(model, {POLICY_TAG: json.dumps(policy.to_dict())})

    def tag_version(
        self, model: str, version: str, status: str, reason: str, at: float, rollout_id: str
    ) -> None:
        self.registry.set_version_tags(
            model,
            version,
            {
                STATUS_TAG: status,
                REASON_TAG: reason[:4000],
                AT_TAG: _iso(at),
                ROLLOUT_ID_TAG: rollout_id,
            },
        )

    @staticmethod
    def _decode(model: str, raw: str | None) -> Rollout | None:
        if raw is None:
            return None
        try:
            return Rollout.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"tag {ROLLOUT_TAG} of {model} is not a valid rollout ({exc}); "
                "abort it with `modelcanary rollout abort` or delete the tag in MLflow"
            ) from exc
