"""The MLflow server down: serving goes on, the controller waits, nothing is applied by halves.

The module owns its MLflow server (SQLite store on disk, so the registry survives a
restart). Part one stops it for real under live traffic while a promotion is decided:
serving keeps answering on the split it last read (``/healthz`` says degraded), the
controller retries the decision until MLflow is back and then applies it whole, and
serving follows. Part two puts a proxy between the controller and MLflow that drops the
link at every write of a promotion in turn (:mod:`tests.reliability.cutting_proxy`):
however far the controller got, it finishes the decision once MLflow answers again —
never half of it, never twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from modelcanary.audit import EXPERIMENT, AuditLog
from modelcanary.config import Settings, Topics
from modelcanary.controller import Applied, Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.events import Action, DecisionEvent
from modelcanary.infra.mlflow_server import mlflow_url, start_mlflow_server
from modelcanary.infra.processes import ProcessHandle, stop_process
from modelcanary.kafka_io import EventPublisher
from modelcanary.launch import Component, start_serving
from modelcanary.registry import Registry
from modelcanary.rollout_store import CHALLENGER, CHAMPION, STATUS_TAG
from modelcanary.workers import run_controller
from tests.conftest import free_port
from tests.reliability.cutting_proxy import CuttingProxy
from tests.reliability.stack import (
    Call,
    FixedRateTraffic,
    gated_policy,
    restart_rollout,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

RATE_PER_S = 20.0
DOWN_AFTER_DECISION_S = 3.0
RETRY_S = 0.2
EVALUATION_TAG = "modelcanary.last_evaluation_run"


@dataclass
class ControllerThread:
    """``run_controller`` (the decision loop, no judge) on a thread of this process."""

    settings: Settings
    applied: list[Applied] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(
            target=run_controller,
            args=(self.settings, self.stop),
            kwargs={"retry_backoff_s": RETRY_S, "on_applied": self.applied.append,
                    "judge": False},
            daemon=True,
        )  # fmt: skip
        self.thread.start()

    def outcome(self, decision: DecisionEvent) -> Applied | None:
        return next((a for a in self.applied if a.decision.event_id == decision.event_id), None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


@dataclass
class MlflowStack:
    settings: Settings
    port: int
    store: Path
    server: ProcessHandle
    registry: Registry
    controller: Controller
    versions: tuple[str, str]
    serving: Component
    control: ControllerThread
    row: dict[str, float]

    def restart_server(self) -> None:
        self.server = start_mlflow_server(self.port, self.store, self.store / "mlflow.log")


@pytest.fixture(scope="module")
def mlflow_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowStack]:
    root = tmp_path_factory.mktemp("mlflow-outage")
    port = free_port()
    store = root / "mlflow"
    server = start_mlflow_server(port, store, store / "mlflow.log")
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=root / "data", kafka_bootstrap=kafka_bootstrap, mlflow_uri=mlflow_url(port),
        model_name=f"mlflow-down-{tag}", topics=Topics(prefix=f"mlflowdown{tag}"),
        partitions=2, reconcile_interval_s=0.3, session_timeout_ms=1_000,
        heartbeat_interval_ms=300, max_poll_interval_ms=2_000,
    )  # fmt: skip
    registry = Registry(settings.mlflow_uri or "")
    dataset = load_demo_dataset()
    sample = dataset.X_train.head(3)
    v1 = registry.register_sklearn(settings.model_name, train_variant("baseline", dataset), sample)
    v2 = registry.register_sklearn(settings.model_name, train_variant("good", dataset), sample)
    controller = Controller(registry)
    controller.start(settings.model_name, v2, gated_policy())
    serving = start_serving(settings, free_port())
    stack = MlflowStack(settings, port, store, server, registry, controller, (v1, v2), serving,
                        ControllerThread(settings), dataset.X_test.iloc[0].to_dict())  # fmt: skip
    try:
        yield stack
    finally:
        stack.control.close()
        serving.stop()
        stop_process(stack.server, timeout_s=10)


# -- part one: the server stopped for real -------------------------------------------
class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Outage:
    stack: MlflowStack
    decision: DecisionEvent
    calls: list[Call]
    down: float
    up: float
    converged: float
    health_before: dict
    health_during: dict
    applied_while_down: Applied | None
    retries: list[str]


@pytest.fixture(scope="module")
def outage(mlflow_stack: MlflowStack) -> Outage:
    stack = mlflow_stack
    client = httpx.Client(base_url=stack.serving.url or "", timeout=10)
    retries = _Retries()
    logging.getLogger("modelcanary.workers").addHandler(retries)
    traffic = FixedRateTraffic(stack.serving.url or "", stack.row, RATE_PER_S, tag="mlflow")
    traffic.start()
    try:
        time.sleep(2.0)
        health_before = client.get("/healthz").json()
        rollout = stack.controller.store.load(stack.settings.model_name)
        assert rollout is not None
        stop_process(stack.server, timeout_s=10)
        down = time.monotonic()
        wait_until(lambda: client.get("/healthz").json()["status"] == "degraded", 10, "degraded")
        promote = DecisionEvent(
            model=rollout.model, rollout_id=rollout.rollout_id, action=Action.PROMOTE,
            from_state=rollout.label, to_state="promoted", traffic_fraction=1.0,
            reason="promoted while MLflow is down",
        )  # fmt: skip
        publisher = EventPublisher(stack.settings.resolved_kafka_bootstrap())
        publisher.publish(stack.settings.topics.decisions, promote)
        assert publisher.flush(10)
        publisher.close()
        time.sleep(DOWN_AFTER_DECISION_S)
        health_during = client.get("/healthz").json()
        applied_while_down = stack.control.outcome(promote)
        stack.restart_server()
        up = time.monotonic()
        wait_until(lambda: stack.control.outcome(promote) is not None, 60, "the promotion")
        wait_until(
            lambda: client.get("/healthz").json()["champion_version"] == stack.versions[1],
            30,
            "serving to follow",
        )
        converged = time.monotonic()
        time.sleep(2.0)
    finally:
        calls = traffic.stop()
        client.close()
        logging.getLogger("modelcanary.workers").removeHandler(retries)
    return Outage(stack, promote, calls, down, up, converged, health_before, health_during,
                  applied_while_down, retries.messages)  # fmt: skip


def test_serving_answers_on_the_last_known_split_while_mlflow_is_down(
    outage: Outage, measure
) -> None:
    during = [c for c in outage.calls if outage.down <= c.started < outage.up]
    measure("requests_while_mlflow_down", len(during))
    failed = [c for c in outage.calls if not c.ok]
    assert not failed, f"{len(failed)} users got an error, e.g. {failed[:3]}"
    assert len(during) >= RATE_PER_S * DOWN_AFTER_DECISION_S
    before, health = outage.health_before, outage.health_during
    assert health["status"] == "degraded" and "cannot read MLflow" in health["problems"]
    for name in ("champion_version", "challenger_version", "traffic_fraction", "rollout_label"):
        assert health[name] == before[name], name
    first: dict[str, str | None] = {}
    for call in outage.calls:
        if call.started < outage.down:
            first.setdefault(call.unit_id, call.version)
    assert {c.arm for c in during} == {"champion", "challenger"}
    moved = [c for c in during if c.unit_id in first and first[c.unit_id] != c.version]
    assert not moved, f"units changed version while MLflow was down: {moved[:3]}"


def test_the_controller_retries_then_applies_the_whole_decision(outage: Outage) -> None:
    stack = outage.stack
    assert outage.applied_while_down is None
    assert len([m for m in outage.retries if "retrying" in m]) >= 3, outage.retries
    applied = stack.control.outcome(outage.decision)
    assert applied is not None and applied.applied, applied
    problem = _not_promoted(stack.registry, stack.settings.model_name, *stack.versions,
                            outage.decision)  # fmt: skip
    assert problem is None, problem


def test_serving_follows_the_decision_once_mlflow_is_back(outage: Outage, measure) -> None:
    measure("s_from_mlflow_back_to_serving_new_champion", round(outage.converged - outage.up, 1))
    after = [c for c in outage.calls if c.started > outage.converged + 0.5]
    assert after and {c.version for c in after} == {outage.stack.versions[1]}


def _not_promoted(
    registry: Registry, model: str, old: str, new: str, decision: DecisionEvent
) -> str | None:
    """None if the promotion is whole (aliases moved, old champion retired, rollout state,
    one audit run), else what is wrong."""
    aliases = registry.aliases(model)
    if aliases.get(CHAMPION) != new or CHALLENGER in aliases:
        return f"aliases {aliases}"
    if registry.version_tags(model, old).get(STATUS_TAG) != "retired":
        return f"version {old} not tagged retired"
    rollout = Controller(registry).store.load(model)
    if rollout is None or rollout.rollout_id != decision.rollout_id:
        return f"another rollout: {rollout}"
    if rollout.state.value != "promoted":
        return f"rollout {rollout.state.value}"
    runs = _audit_runs(registry, decision)
    if len(runs) != 1:
        return f"{len(runs)} audit runs of decision {decision.event_id}"
    return None


def _audit_runs(registry: Registry, decision: DecisionEvent) -> list:
    experiment = registry.client.get_experiment_by_name(EXPERIMENT)
    return registry.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`modelcanary.event_id` = '{decision.event_id}'",
    )


# -- part two: the link cut at every write of a promotion ---------------------------
@dataclass
class Cut:
    at: int
    request: str
    decision: DecisionEvent
    old: str
    new: str
    refused: int
    state_during: str
    aliases_during: dict[str, str]
    applied: Applied | None
    promoted: str | None  # None when the promotion is whole, else what is missing
    audit_runs: list[tuple[str, str]]  # (run id, status) of the decision's audit runs
    evaluation_tags: dict[str, str | None]  # version -> modelcanary.last_evaluation_run


@dataclass
class Sweep:
    registry: Registry
    model: str
    sequence: list[str]
    cuts: list[Cut]
    orphan_runs: list[str]  # audit runs that belong to no decision


def _cut_points(sequence: list[str]) -> list[int]:
    """Where to cut: before the first write of each kind on each side of the commit point.

    Writes of one kind in a row (the four tags of a retired version) leave states alike,
    so one cut each keeps the sweep short; cutting before the run is created is the same
    as cutting before the audit, and the report after the audit is best effort (not
    retried), so neither is cut. A cut at ``i`` lets requests ``0..i-1`` through.
    """
    commit = max(i for i, r in enumerate(sequence) if r.endswith("registered-models/set-tag"))
    audited = max(i for i, r in enumerate(sequence) if r.endswith("model-versions/set-tag"))
    seen: set[tuple[bool, str]] = set()
    points = []
    for index, request in enumerate(sequence[: audited + 1]):
        method, path = request.split(" ", 1)
        kind = (index > commit, request)
        if method not in ("POST", "DELETE") or path.endswith(("/search", "/runs/create")):
            continue
        if kind not in seen:
            seen.add(kind)
            points.append(index)
    return points


def _settle(proxy: CuttingProxy, quiet_s: float = 0.6, timeout_s: float = 15.0) -> None:
    """Wait until nothing has gone through ``proxy`` for ``quiet_s``.

    A fixed pause after the decision's outcome was too short on a busy machine: the
    report's write then arrived during the next promotion and shifted its sequence.
    """
    deadline = time.monotonic() + timeout_s
    seen, since = len(proxy.forwarded), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if len(proxy.forwarded) != seen:
            seen, since = len(proxy.forwarded), time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


@pytest.fixture(scope="module")
def sweep(mlflow_stack: MlflowStack, outage: Outage) -> Iterator[Sweep]:
    """Promotions through the cutting proxy: one whole, then one cut at each write."""
    stack = mlflow_stack
    # A dropped request fails at once instead of after MLflow's own retry with backoff.
    env = pytest.MonkeyPatch()
    env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    model = stack.settings.model_name
    proxy = CuttingProxy(stack.settings.mlflow_uri or "")
    # Each decision holds the poll loop for its report (~3 s): longer than the module's
    # 2-s poll interval, which would have the controller leave its group and re-read the
    # decision (harmless, but its reads would shift the cut points).
    settings = stack.settings.with_overrides(
        mlflow_uri=proxy.url,
        topics=Topics(prefix=f"cut{uuid.uuid4().hex[:8]}"),
        max_poll_interval_ms=15_000,
    )
    control = ControllerThread(settings)
    publisher = EventPublisher(settings.resolved_kafka_bootstrap())
    audit_experiment = AuditLog(stack.registry)._experiment()

    def promote(cut: int | None, sequence: list[str]) -> Cut:
        old = stack.registry.alias_version(model, CHAMPION) or ""
        new = next(v for v in stack.versions if v != old)
        rollout_id = restart_rollout(stack.controller, model, new, gated_policy())
        rollout = stack.controller.store.load(model)
        assert rollout is not None and rollout.rollout_id == rollout_id
        decision = DecisionEvent(
            model=model, rollout_id=rollout_id, action=Action.PROMOTE, from_state=rollout.label,
            to_state="promoted", traffic_fraction=1.0, reason=f"promotion cut at {cut}",
        )  # fmt: skip
        proxy.forwarded.clear()
        if cut is not None:
            proxy.cut_after(cut)
        publisher.publish(settings.topics.decisions, decision)
        assert publisher.flush(10)
        state, aliases = "", {}
        if cut is not None:
            wait_until(  # the report after the audit run is not retried: a warning is all
                lambda: proxy.refused >= 3 or control.outcome(decision) is not None,
                30,
                f"the controller to retry (cut {cut})",
                0.05,
            )
            assert proxy.forwarded[:cut] == sequence[:cut], f"cut {cut} landed elsewhere"
            state = stack.controller.store.load(model).state.value  # type: ignore[union-attr]
            aliases = stack.registry.aliases(model)
            proxy.heal()
        wait_until(lambda: control.outcome(decision) is not None, 30, f"decision (cut {cut})", 0.1)
        _settle(proxy)  # the report attached after the audit run comes last
        registry = stack.registry
        return Cut(
            cut if cut is not None else -1, sequence[cut] if cut is not None else "", decision,
            old, new, proxy.refused, state, aliases, control.outcome(decision),
            _not_promoted(registry, model, old, new, decision),
            [(r.info.run_id, r.info.status) for r in _audit_runs(registry, decision)],
            {v: registry.version_tags(model, v).get(EVALUATION_TAG) for v in (old, new)},
        )  # fmt: skip

    try:
        promote(None, [])  # the first one also looks the audit experiment up
        whole = promote(None, [])
        sequence = list(proxy.forwarded)
        assert whole.applied is not None and whole.applied.applied
        cuts = [promote(i, sequence) for i in _cut_points(sequence)]
        orphans = [
            run.info.run_id
            for run in stack.registry.client.search_runs([audit_experiment], max_results=1000)
            if "modelcanary.event_id" not in run.data.tags
        ]
        yield Sweep(stack.registry, model, sequence, cuts, orphans)
    finally:
        publisher.close()
        control.close()
        proxy.close()
        env.undo()


def test_a_promotion_cut_at_any_write_is_finished_whole_once_mlflow_answers(
    sweep: Sweep, measure
) -> None:
    measure("mlflow_requests_of_a_promotion", len(sweep.sequence))
    measure("cut_points", [f"{c.at}:{c.request}" for c in sweep.cuts])
    commit = max(i for i, r in enumerate(sweep.sequence) if r.endswith("registered-models/set-tag"))
    for cut in sweep.cuts:
        # While cut off: the rollout tag (the commit point) is written last, so the rollout
        # still says running unless every earlier step of the promotion is done.
        if cut.at <= commit:
            assert cut.state_during == "running", cut
        else:
            assert cut.state_during == "promoted" and cut.aliases_during.get(CHAMPION) == cut.new
        assert cut.applied is not None and cut.applied.applied, cut
        assert cut.promoted is None, f"cut {cut.at} ({cut.request}): {cut.promoted}"


def test_a_promotion_cut_at_any_write_is_recorded_whole_once(sweep: Sweep) -> None:
    problems = []
    for cut in sweep.cuts:
        where = f"cut {cut.at} ({cut.request})"
        (run_id, status), *_ = cut.audit_runs
        if status != "FINISHED":
            problems.append(f"{where}: audit run {status}")
        if set(cut.evaluation_tags.values()) != {run_id}:
            problems.append(f"{where}: versions point at {cut.evaluation_tags}")
    if sweep.orphan_runs:
        problems.append(f"audit runs of no decision: {sweep.orphan_runs}")
    assert not problems, problems
