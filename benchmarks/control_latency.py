"""Control latency: from a decision being published to every serving replica applying it.

Starts its own embedded broker and MLflow server, registers two versions, starts the
controller and two `bentoml serve` replicas, starts a rollout, then publishes operator
decisions (set_traffic, alternating 20% and 40%) and times how long until both
replicas' /healthz report the new split. The controller applies the decision to MLflow;
replicas learn of it from the decisions topic and re-read MLflow (and reconcile
periodically anyway).

Usage: python benchmarks/control_latency.py --trials 30 --json out/control_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from modelcanary.admin import RolloutAdmin
from modelcanary.config import Settings, Topics
from modelcanary.controller import Controller
from modelcanary.demo_data import load_demo_dataset, train_variant
from modelcanary.events import Action
from modelcanary.infra import embedded
from modelcanary.infra.processes import free_port
from modelcanary.kafka_io import EventPublisher
from modelcanary.launch import start_serving, start_worker
from modelcanary.policy import default_policy
from modelcanary.registry import Registry


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.trials < 1 or args.replicas < 1:
        parser.error("--trials and --replicas must be at least 1")
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="mc-control-")),
        broker_port=free_port(), mlflow_port=free_port(), model_name="latency-model",
        topics=Topics(f"cl{uuid.uuid4().hex[:6]}"), reconcile_interval_s=5.0,
        session_timeout_ms=2_000, heartbeat_interval_ms=500, max_poll_interval_ms=3_000,
    )  # fmt: skip
    components = []
    embedded.up(settings)
    try:
        registry = Registry(settings.resolved_mlflow_uri())
        dataset = load_demo_dataset()
        for variant in ("baseline", "good"):
            registry.register_sklearn(settings.model_name, train_variant(variant, dataset),
                                      dataset.X_train.head(2))  # fmt: skip
        controller = Controller(registry)
        controller.start(settings.model_name, "2", default_policy())
        components.append(start_worker(settings, "control"))
        replicas = [start_serving(settings, free_port()) for _ in range(args.replicas)]
        components.extend(replicas)
        publisher = EventPublisher(settings.resolved_kafka_bootstrap())
        admin = RolloutAdmin(settings.model_name, controller, publisher, settings.topics.decisions)
        time.sleep(5)  # the controller joins its consumer group
        latencies: list[float] = []
        with httpx.Client(timeout=5) as client:
            for trial in range(args.trials):
                fraction = 0.2 if trial % 2 == 0 else 0.4
                started = time.perf_counter()
                admin.act(Action.SET_TRAFFIC, "benchmark", traffic_fraction=fraction)
                publisher.flush(5)
                pending = {r.url for r in replicas}
                while pending:
                    for url in list(pending):
                        health = client.get(f"{url}/healthz").json()
                        if health.get("traffic_fraction") == fraction:
                            pending.discard(url)
                    if time.perf_counter() - started > 30:
                        raise SystemExit(f"trial {trial}: replicas never applied {fraction}")
                    time.sleep(0.005)
                latencies.append(time.perf_counter() - started)
                print(f"trial {trial}: {latencies[-1] * 1000:.0f} ms", file=sys.stderr)
                time.sleep(0.5)
        publisher.close()
    finally:
        for component in components:
            component.stop()
        embedded.down(settings)
    result = {
        "replicas": args.replicas,
        "trials": args.trials,
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(quantile(latencies, 0.99), 4),
        "max_s": round(max(latencies), 4),
        "periodic_reconcile_s": settings.reconcile_interval_s,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
