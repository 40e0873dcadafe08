"""Fixtures of the reliability suite: measurements in the terminal summary, and one shared
stack (serving + evaluator + controller as real processes, with secrets configured).

The shared stack is what an operator runs: `bentoml serve` with an admin token, an
evaluator worker and a controller with a webhook whose URL carries secrets, on the
session's broker and MLflow server, rolling out version 2 against version 1 (one canary
step at 50% behind a manual gate, so the judge never moves it on its own). The fuzzing,
load and security tests share it; the security tests run last and grep everything the
others made it write for the secrets.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.launch import Component, start_serving, start_worker
from modelcanary.registry import Registry
from tests.conftest import free_port
from tests.reliability.stack import WebhookReceiver, gated_policy, restart_rollout, wait_until

MEASUREMENTS: list[tuple[str, str, object]] = []
STACK_MAX_REQUEST_BYTES = 64 * 1024
STACK_MAX_BATCH_ROWS = 50
#: A module that leaves a marker file when imported: serving can import it (it is on the
#: serving process's PYTHONPATH), so a request that got it imported would show.
EVIL_MODULE = "mc_evil_module"


@pytest.fixture
def measure(request: pytest.FixtureRequest, record_property: Callable) -> Callable:
    """``measure(name, value)``: shown in the terminal summary and the JUnit XML."""

    def note(name: str, value: object) -> None:
        record_property(name, value)
        MEASUREMENTS.append((request.node.name, name, value))

    return note


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MEASUREMENTS:
        return
    terminalreporter.section("reliability measurements")
    for test, name, value in MEASUREMENTS:
        terminalreporter.write_line(f"{test}: {name} = {value}")


@dataclass(frozen=True)
class Secrets:
    admin_token: str
    webhook_path: str
    webhook_query: str

    def all(self) -> tuple[str, ...]:
        return (self.admin_token, self.webhook_path, self.webhook_query)


@dataclass
class Stack:
    settings: Settings
    registry: Registry
    controller: Controller
    versions: tuple[str, str]
    serving: Component
    evaluator: Component
    control: Component
    client: httpx.Client
    secrets: Secrets
    webhook: WebhookReceiver
    evil_dir: Path
    row: dict[str, float]
    rows: list[dict[str, float]]

    @property
    def url(self) -> str:
        return self.serving.url or ""

    @property
    def model(self) -> str:
        return self.settings.model_name

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets.admin_token}"}

    def logs(self) -> list[Path]:
        return sorted((self.settings.data_dir / "logs").glob("*.log"))

    def ensure_running_rollout(self) -> str:
        """A running rollout of the version that is not the champion (fuzzing may end it),
        once the serving replica routes by it (it re-reads MLflow about once a second)."""
        rollout = self.controller.store.load(self.model)
        if rollout is not None and rollout.state.value == "running":
            rollout_id = rollout.rollout_id
        else:
            champion = self.registry.alias_version(self.model, "champion")
            other = next(v for v in self.versions if v != champion)
            rollout_id = restart_rollout(self.controller, self.model, other, gated_policy())
        wait_until(
            lambda: self.client.get("/healthz").json()["rollout_id"] == rollout_id,
            30,
            f"the serving replica to route by rollout {rollout_id}",
        )
        return rollout_id


def _evil_module(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "IMPORTED"
    (folder / f"{EVIL_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    return folder


@pytest.fixture(scope="package")
def stack(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("reliability-stack")
    tag = uuid.uuid4().hex[:8]
    secrets = Secrets(f"adm-{uuid.uuid4().hex}", f"hookpath-{uuid.uuid4().hex}",
                      f"hookq-{uuid.uuid4().hex}")  # fmt: skip
    webhook = WebhookReceiver(fail_first=1)
    hook_url = webhook.url(f"/hooks/{secrets.webhook_path}?sig={secrets.webhook_query}")
    settings = Settings(
        data_dir=root / "data",
        kafka_bootstrap=kafka_bootstrap,
        mlflow_uri=mlflow_uri,
        model_name=f"rel-{tag}",
        topics=Topics(prefix=f"rel{tag}"),
        partitions=2,
        reconcile_interval_s=0.3,
        session_timeout_ms=1_000,
        heartbeat_interval_ms=300,
        max_poll_interval_ms=2_000,
        snapshot_interval_s=1.0,
        max_request_bytes=STACK_MAX_REQUEST_BYTES,
        max_batch_rows=STACK_MAX_BATCH_ROWS,
        admin_token=secrets.admin_token,
        webhook_urls=(hook_url,),
    )
    registry = Registry(mlflow_uri)
    dataset = load_demo_dataset()
    sample = dataset.X_train.head(3)
    v1 = registry.register_sklearn(settings.model_name, train_variant("baseline", dataset), sample)
    v2 = registry.register_sklearn(settings.model_name, train_variant("good", dataset), sample)
    controller = Controller(registry)
    controller.start(settings.model_name, v2, gated_policy())
    evil_dir = _evil_module(root / "evil")
    started: list[Component] = []
    client = None
    try:
        # Children copy this environment: the secrets reach them as they would from a .env.
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MODELCANARY_ADMIN_TOKEN", secrets.admin_token)
            env.setenv("MODELCANARY_WEBHOOK_URLS", hook_url)
            env.setenv("PYTHONPATH", str(evil_dir))
            # Serving first: the workers would slow its start down (2 cores).
            started.append(start_serving(settings, free_port()))
            started.append(start_worker(settings, "evaluate"))
            started.append(start_worker(settings, "control"))
        serving, evaluator, control = started
        client = httpx.Client(base_url=serving.url or "", timeout=10)
        wait_until(
            lambda: client.get("/healthz").json()["challenger_version"] == v2, 30, "the canary"
        )
        rows = [dataset.X_test.iloc[i].to_dict() for i in range(20)]
        yield Stack(settings, registry, controller, (v1, v2), serving, evaluator, control,
                    client, secrets, webhook, evil_dir, rows[0], rows)  # fmt: skip
    finally:
        if client is not None:
            client.close()
        for component in reversed(started):
            component.stop()
        webhook.close()
