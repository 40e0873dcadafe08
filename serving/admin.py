"""Admin endpoints of the serving service, mixed into :class:`serving.service.ModelcanaryService`.

Every call needs ``Authorization: Bearer <MODELCANARY_ADMIN_TOKEN>`` (401 without it;
403 when no token is configured, which disables the endpoints). Actions are published
as decisions and applied by the controller; see :mod:`modelcanary.admin`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument
from pydantic import Field

from modelcanary.admin import (
    AdminDisabledError,
    RolloutAdmin,
    RolloutStatus,
    UnauthorizedError,
    check_token,
)
from modelcanary.config import Settings
from modelcanary.errors import (
    ConfigError,
    ModelcanaryError,
    RegistryError,
    RegistryUnavailableError,
    RolloutError,
)
from modelcanary.events import Action, to_dict


class AdminEndpoints:
    """Mixin: needs ``self.settings`` and ``self.router`` (model name, event publisher).

    The methods are named ``rollout_*``: BentoML matches routes in the alphabetical order
    of the API methods' names, so these come after ``predict``, the route that matters.
    """

    settings: Settings
    router: Any
    _rollout_admin: RolloutAdmin | None = None

    def _admin(self, ctx: bentoml.Context, model: str) -> RolloutAdmin:
        try:
            check_token(self.settings.admin_token, ctx.request.headers.get("authorization"))
        except UnauthorizedError as exc:
            raise BentoMLException(str(exc), error_code=HTTPStatus.UNAUTHORIZED) from exc
        except AdminDisabledError as exc:
            raise BentoMLException(str(exc), error_code=HTTPStatus.FORBIDDEN) from exc
        if model != self.settings.model_name:
            raise InvalidArgument(
                f"this replica serves {self.settings.model_name!r}, not {model!r}: call a "
                f"replica of {model!r}"
            )
        if self._rollout_admin is None:
            from modelcanary.controller import Controller
            from modelcanary.registry import Registry

            controller = Controller(Registry(self.settings.resolved_mlflow_uri()))
            self._rollout_admin = RolloutAdmin(
                model, controller, self.router.publisher, self.settings.topics.decisions
            )
        return self._rollout_admin

    @staticmethod
    def _refused(exc: ModelcanaryError) -> BentoMLException:
        """409 for what the state machine or the policy refuses, 404 for an unknown model
        or version, 503 only when MLflow or Kafka cannot be reached."""
        if isinstance(exc, RolloutError | ConfigError):
            return BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT)
        if isinstance(exc, RegistryError) and not isinstance(exc, RegistryUnavailableError):
            return BentoMLException(str(exc), error_code=HTTPStatus.NOT_FOUND)
        return BentoMLException(str(exc), error_code=HTTPStatus.SERVICE_UNAVAILABLE)

    @bentoml.api(route="/admin/rollout/start")
    def rollout_start(
        self,
        ctx: bentoml.Context,
        model: str = Field(description="Registered model name (must be this replica's)"),
        version: str = Field(max_length=50, description="Candidate version to roll out"),
        policy: dict[str, Any] | None = Field(
            default=None, description="Policy (as in examples/policy.yaml); default if absent"
        ),
    ) -> dict[str, Any]:
        """Start a rollout of ``version``: it becomes `challenger` and gets the first step."""
        admin = self._admin(ctx, model)
        try:
            rollout = admin.start(version, policy)
        except ModelcanaryError as exc:
            raise self._refused(exc) from exc
        return {"rollout": RolloutStatus(rollout, None).to_dict()["rollout"]}

    @bentoml.api(route="/admin/rollout/act")
    def rollout_act(
        self,
        ctx: bentoml.Context,
        model: str = Field(description="Registered model name (must be this replica's)"),
        action: str = Field(
            description="pause, resume, approve, promote, rollback, abort or set_traffic"
        ),
        reason: str = Field(default="", max_length=500, description="Recorded with it"),
        traffic_fraction: float | None = Field(
            default=None, ge=0.0, le=1.0, description="For set_traffic: the new fraction"
        ),
    ) -> dict[str, Any]:
        """Publish an operator's decision; the controller applies it within a second."""
        admin = self._admin(ctx, model)
        try:
            chosen = Action(action)
        except ValueError as exc:
            raise InvalidArgument(f"action {action!r} is not an operator action") from exc
        try:
            decision = admin.act(chosen, reason, traffic_fraction, by="admin API")
        except ModelcanaryError as exc:
            raise self._refused(exc) from exc
        return {"decision": to_dict(decision)}

    @bentoml.api(route="/admin/rollout/status")
    def rollout_status(
        self,
        ctx: bentoml.Context,
        model: str = Field(description="Registered model name (must be this replica's)"),
    ) -> dict[str, Any]:
        """The rollout (state, step, split) and the latest judgement with its evidence."""
        admin = self._admin(ctx, model)
        try:
            status = admin.status()
            latest = None
            if status.rollout is not None:
                from modelcanary.audit import AuditLog

                latest = AuditLog(admin.controller.registry).latest(status.rollout.rollout_id)
        except ModelcanaryError as exc:
            raise self._refused(exc) from exc
        return admin.status(latest).to_dict()
