"""Schemathesis against the running service's own OpenAPI document: every operation.

Each operation of ``/docs.json`` (predict, batch, feedback, the admin endpoints, the
health and metrics endpoints) gets requests generated from its schema, both valid and
invalid ones, with no token, a wrong token and the right one. No answer may be a 5xx.
The stack is the whole system (serving, evaluator, controller), so admin calls that are
accepted really change the rollout; the stack's rollout is restarted afterwards.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.reliability.conftest import Stack
from tests.reliability.stack import wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

EXAMPLES = 15  # per operation and per kind of credentials


def _operations(stack: Stack) -> list:
    api = schemathesis.openapi.from_url(f"{stack.url}/docs.json")
    return [result.ok() for result in api.get_all_operations()]


def test_no_generated_request_to_any_operation_gets_a_5xx(stack: Stack, measure) -> None:
    stack.ensure_running_rollout()
    operations = _operations(stack)
    paths = {op.path for op in operations}
    assert {"/predict", "/predict_batch", "/feedback"} <= paths, paths
    assert any(p.startswith("/admin/") for p in paths), f"no admin operation in {paths}"
    credentials = {
        "none": {},
        "wrong": {"Authorization": "Bearer not-the-token"},
        "right": stack.admin_headers(),
    }
    statuses: dict[str, Counter] = {}
    for operation in operations:
        seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", Counter())
        for headers in credentials.values():
            _fuzz(stack, operation, headers, seen)
        if operation.path.startswith("/admin/"):  # and past the model check, too
            _fuzz(stack, operation, credentials["right"], seen, model=stack.model)
    measure("statuses", {op: dict(counts) for op, counts in sorted(statuses.items())})
    answered = Counter()
    for counts in statuses.values():
        answered.update(counts)
    assert answered[200] > 0, "no generated request got through to a model or an action"
    stack.ensure_running_rollout()


def _fuzz(
    stack: Stack, operation, headers: dict[str, str], seen: Counter, model: str | None = None
) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        response = case.call(base_url=stack.url, headers=headers, timeout=30)
        seen[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error])

    check()


def test_starting_a_rollout_of_a_version_that_does_not_exist_is_a_client_error(
    stack: Stack,
) -> None:
    stack.ensure_running_rollout()
    aborted = stack.client.post(
        "/admin/rollout/act",
        json={"model": stack.model, "action": "abort", "reason": "test"},
        headers=stack.admin_headers(),
    )
    assert aborted.status_code == 200, aborted.text
    wait_until(
        lambda: stack.controller.store.load(stack.model).state.value == "aborted",  # type: ignore[union-attr]
        20,
        "the abort",
    )
    try:
        response = stack.client.post(
            "/admin/rollout/start",
            json={"model": stack.model, "version": "987654"},
            headers=stack.admin_headers(),
        )
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        assert "987654" in response.text
    finally:
        stack.ensure_running_rollout()
