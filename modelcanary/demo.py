"""The end-to-end demo: a champion, a good and a bad candidate, real processes throughout.

Starts its own embedded Kafka broker and MLflow server (under ``<data_dir>/demo``, on
free ports), trains and registers three versions, serves them with ``bentoml serve``,
runs the evaluator and controller as separate processes, drives HTTP traffic with late
outcomes, and rolls out each candidate until the judge promotes or rolls it back.
Everything it started is stopped at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from modelcanary.config import Settings
from modelcanary.controller import Controller
from modelcanary.events import Action, DecisionEvent, decode_decision
from modelcanary.infra import embedded
from modelcanary.infra.processes import free_port
from modelcanary.kafka_io import RecordConsumer
from modelcanary.launch import start_serving, start_worker
from modelcanary.policy import Policy, default_policy
from modelcanary.registry import Registry
from modelcanary.rollout import Rollout
from modelcanary.rollout_store import RolloutStore
from modelcanary.simulate import TrafficConfig, TrafficSimulator, TrafficStats

DEMO_MODEL = "demo-classifier"


@dataclass(frozen=True)
class CandidateResult:
    variant: str
    version: str
    offline_accuracy: float
    final: Rollout | None
    decision: DecisionEvent | None
    seconds: float
    traffic: TrafficStats
    report: Path | None = None


class DecisionWatcher:
    """Follows the decisions topic in a thread and prints each decision as it lands."""

    def __init__(self, bootstrap: str, topic: str, console: Console, t0: float) -> None:
        self._consumer = RecordConsumer(bootstrap, [topic], group_id=None, from_beginning=True)
        self._console = console
        self._t0 = t0
        self._stop = threading.Event()
        self.decisions: list[DecisionEvent] = []
        self._thread = threading.Thread(target=self._run, name="decisions", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for record in self._consumer.poll(timeout_ms=200):
                decision = decode_decision(record.value)
                self.decisions.append(decision)
                if decision.action is not Action.HOLD:
                    self._console.print(
                        f"  [dim]{time.monotonic() - self._t0:6.1f}s[/] [bold]"
                        f"{decision.action.value}[/] {decision.from_state} → "
                        f"{decision.to_state} ({decision.traffic_fraction:.0%}): "
                        f"{decision.reason}"
                    )

    def last_for(self, rollout_id: str) -> DecisionEvent | None:
        matching = [
            d for d in self.decisions if d.rollout_id == rollout_id and d.action is not Action.HOLD
        ]
        return matching[-1] if matching else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def demo_policy() -> Policy:
    """The default gates with larger first steps: the demo's traffic is modest."""
    policy = default_policy()
    fractions = (0.15, 0.30, 0.50)
    steps = tuple(
        dataclasses.replace(step, traffic_fraction=fraction)
        for step, fraction in zip(policy.steps, fractions, strict=False)
    )
    return dataclasses.replace(policy, steps=steps)


def demo_settings(base: Settings) -> Settings:
    return base.with_overrides(
        data_dir=base.data_dir / "demo",
        kafka_bootstrap=None,
        mlflow_uri=None,
        broker_port=free_port(),
        mlflow_port=free_port(),
        model_name=DEMO_MODEL,
        reconcile_interval_s=0.5,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=500,
        max_poll_interval_ms=3_000,
        snapshot_interval_s=1.0,
    )


def run_demo(
    base: Settings,
    console: Console,
    policy: Policy | None = None,
    rate_per_s: float = 200.0,
    max_rollout_s: float = 150.0,
) -> list[CandidateResult]:
    policy = policy or demo_policy()
    settings = demo_settings(base)
    if settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)
    t0 = time.monotonic()

    def step(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - t0:6.1f}s[/] {text}")

    with ExitStack() as cleanup:
        step("starting the embedded Kafka broker and MLflow server")
        embedded.up(settings, on_progress=lambda text: step(f"  {text}"))
        cleanup.callback(embedded.down, settings)
        registry = Registry(settings.resolved_mlflow_uri())
        from modelcanary.demo_data import load_demo_dataset, test_accuracy, train_variant

        dataset = load_demo_dataset()
        versions: dict[str, tuple[str, float]] = {}
        for variant in ("baseline", "good", "bad"):
            model = train_variant(variant, dataset)
            accuracy = test_accuracy(model, dataset)
            with _quiet():
                version = registry.register_sklearn(
                    DEMO_MODEL, model, dataset.X_train.head(5),
                    description=f"demo {variant} model", metrics={"test_accuracy": accuracy},
                )  # fmt: skip
            versions[variant] = (version, accuracy)
            role = "champion" if variant == "baseline" else "candidate"
            step(
                f"registered {variant} as version {version} ({role}), "
                f"offline test accuracy {accuracy:.3f}"
            )

        step("starting bentoml serve, the evaluator and the controller")
        port = free_port()
        serving = start_serving(settings, port)
        cleanup.callback(serving.stop)
        for worker in ("evaluate", "control"):
            component = start_worker(settings, worker)
            cleanup.callback(component.stop)
        step(f"serving {DEMO_MODEL} at {serving.url} (logs in {settings.data_dir / 'logs'})")

        watcher = DecisionWatcher(
            settings.resolved_kafka_bootstrap(), settings.topics.decisions, console, t0
        )
        cleanup.callback(watcher.close)
        controller = Controller(registry)
        store = RolloutStore(registry)
        rows = dataset.X_test.to_dict(orient="records")
        labels = [int(y) for y in dataset.y_test]
        results = []
        for variant in ("good", "bad"):
            version, accuracy = versions[variant]
            rollout = controller.start(DEMO_MODEL, version, policy)
            step(
                f"[bold]rolling out version {version} ({variant})[/]: steps "
                + " → ".join(f"{s.traffic_fraction:.0%}" for s in policy.steps)
            )
            started = time.monotonic()
            final, traffic = _drive(
                serving.url or "", rows, labels, store, rollout, rate_per_s, max_rollout_s, console
            )
            report = _report(
                registry,
                rollout.rollout_id,
                settings.data_dir / "reports" / f"v{version}-{variant}.html",
            )
            results.append(
                CandidateResult(variant, version, accuracy, final,
                                watcher.last_for(rollout.rollout_id),
                                time.monotonic() - started, traffic, report)
            )  # fmt: skip
            step(
                f"version {version}: [bold]{final.state.value if final else 'unknown'}[/] after "
                f"{traffic.ok} requests ({traffic.failed} failed)"
            )
            for error in traffic.errors[:3]:
                step(f"  [yellow]a failed request:[/] {error}")
        step("stopping everything the demo started")
    console.print(summary_table(results))
    for result in results:
        if result.decision is not None:
            console.print(gate_table(result))
    for result in results:
        if result.report is not None:
            console.print(f"report of v{result.version} ({result.variant}): {result.report}")
    step(f"MLflow store kept in {settings.data_dir}")
    return results


def _drive(
    url: str,
    rows: list[dict[str, Any]],
    labels: list[int],
    store: RolloutStore,
    rollout: Rollout,
    rate_per_s: float,
    max_s: float,
    console: Console,
) -> tuple[Rollout | None, TrafficStats]:
    """Send traffic until the rollout ends; poll MLflow twice a second for its state."""
    latest: dict[str, Rollout | None] = {"rollout": rollout}
    done = threading.Event()

    def follow() -> None:
        while not done.wait(0.5):
            current = store.load(rollout.model)
            latest["rollout"] = current
            if current is not None and current.state.terminal:
                done.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    config = TrafficConfig(rate_per_s=rate_per_s, seed=int(rollout.challenger_version))
    simulator = TrafficSimulator(url, rows, labels, config)
    with console.status("sending traffic") as status:

        def progress(stats: TrafficStats) -> None:
            current = latest["rollout"]
            where = f"{current.label} at {current.traffic_fraction:.0%}" if current else "?"
            split = ", ".join(f"v{v}: {n}" for v, n in sorted(stats.by_version.items()))
            status.update(
                f"{where} · {stats.ok} requests ({split}) · {stats.feedback_sent} outcomes reported"
            )

        stats = asyncio.run(simulator.run(done.is_set, max_s, progress))
    done.set()
    follower.join(timeout=5)
    return store.load(rollout.model), stats


def summary_table(results: list[CandidateResult]) -> Table:
    table = Table(title="modelcanary demo: what happened", show_lines=True)
    for column in ("candidate", "offline acc.", "decision", "why", "requests", "time"):
        table.add_column(column)
    for r in results:
        state = r.final.state.value if r.final else "unknown"
        colour = {"promoted": "green", "rolled_back": "red"}.get(state, "yellow")
        table.add_row(
            f"v{r.version} ({r.variant})",
            f"{r.offline_accuracy:.3f}",
            f"[{colour}]{state}[/]",
            r.decision.reason if r.decision else (r.final.reason if r.final else ""),
            str(r.traffic.ok),
            f"{r.seconds:.0f}s",
        )
    return table


def _report(registry: Registry, rollout_id: str, out: Path) -> Path | None:
    """The rollout's HTML report, once the controller has recorded its last decision."""
    from modelcanary.errors import ModelcanaryError
    from modelcanary.report import report_when_finished

    try:
        return report_when_finished(registry, rollout_id, out)
    except ModelcanaryError as exc:
        logging.getLogger(__name__).warning("no report for %s: %s", rollout_id, exc)
        return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow announces each registration on stdout/stderr; the demo tells its own story."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "…"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def gate_table(result: CandidateResult) -> Table:
    """The metrics that decided: one row per gate of the final decision."""
    assert result.decision is not None
    table = Table(
        title=f"v{result.version} ({result.variant}): {result.decision.action.value} — "
        "the evidence per gate",
        title_justify="left",
    )
    for column in (
        "gate",
        "champion",
        "challenger",
        "difference [interval]",
        "margin",
        "samples ch./cand.",
        "verdict",
    ):
        table.add_column(column)
    colours = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for gate in result.decision.evidence.get("gates", []):
        low, high = (gate.get("interval") or [None, None])[:2]
        samples = gate.get("samples") or {}
        verdict = str(gate.get("verdict"))
        table.add_row(
            str(gate.get("gate")),
            _fmt(gate.get("champion")),
            _fmt(gate.get("challenger")),
            f"{_fmt(gate.get('estimate'))} [{_fmt(low)}, {_fmt(high)}]",
            str(gate.get("margin", "")),
            f"{samples.get('champion', 0)} / {samples.get('challenger', 0)}",
            f"[{colours.get(verdict, 'white')}]{verdict}[/]"
            + (" (critical)" if gate.get("critical") else ""),
        )
    return table


def demo_succeeded(results: list[CandidateResult]) -> bool:
    states = {r.variant: (r.final.state.value if r.final else None) for r in results}
    return states.get("good") == "promoted" and states.get("bad") == "rolled_back"
