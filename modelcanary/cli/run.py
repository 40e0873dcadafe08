"""Commands that run a long-lived component in the foreground: evaluate, control, serve."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import typer
from rich.logging import RichHandler

from modelcanary.cli.app import app, console
from modelcanary.config import load_settings
from modelcanary.errors import ConfigError
from modelcanary.launch import bentoml_serve_command


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    # httpx logs every request with its full URL at INFO: webhook URLs carry secrets.
    for noisy in ("kafka", "urllib3", "mlflow", "alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@app.command()
def evaluate(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run one evaluator worker: join predictions with outcomes, accumulate evidence.

    Workers form the consumer group `<topic prefix>.evaluator` and share the partitions;
    start more of them to scale out. Each publishes a snapshot of its partitions every
    MODELCANARY_SNAPSHOT_S seconds, which the controller merges and judges. Reads
    MODELCANARY_KAFKA_BOOTSTRAP / MODELCANARY_MLFLOW_URI (or the embedded services of
    `modelcanary up`). Stops on Ctrl-C or SIGTERM after a last snapshot.

    Example: MODELCANARY_SNAPSHOT_S=1 modelcanary evaluate
    """
    from modelcanary.workers import run_evaluator

    _logging(verbose)
    worker = run_evaluator(load_settings(), _stop_on_signals())
    console.print(
        f"evaluator stopped: {worker.evaluator.counts}, "
        f"{worker.snapshots_published} snapshots published"
    )


@app.command()
def control(
    interval: float = typer.Option(1.0, help="Seconds between two judgements of each rollout."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the controller: judge the merged evidence, apply decisions to MLflow.

    It merges the evaluators' partition snapshots, judges every running rollout each
    --interval seconds and publishes decisions; it applies each decision (advance,
    promote, roll back, halt, and operators' pause/resume/approve/...) once, in a fixed
    order of side effects, and only if it was made for the rollout's current state.
    Run exactly one. Stops on Ctrl-C or SIGTERM.

    Example: modelcanary control --interval 2
    """
    from modelcanary.workers import run_controller

    _logging(verbose)
    if interval <= 0:
        raise ConfigError("--interval must be > 0 seconds")
    run_controller(load_settings(), _stop_on_signals(), judge_interval_s=interval)


def serving_dir() -> Path:
    path = Path(__file__).resolve().parents[2] / "serving"
    if not (path / "service.py").exists():
        raise ConfigError(
            f"{path}/service.py not found: run modelcanary from a checkout of the repository"
        )
    return path.parent


@app.command()
def serve(
    model: str = typer.Option(None, help="Registered model to serve [default: MODELCANARY_MODEL]."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(3000, help="HTTP port."),
) -> None:
    """Serve a registered model with `bentoml serve`: champion plus the rollout's challenger.

    Endpoints: POST /predict, POST /feedback, GET /healthz, /metrics, /docs.

    Example: modelcanary serve --model demo-classifier --port 3000
    """
    settings = load_settings()
    env = dict(os.environ)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["MODELCANARY_MODEL"] = model or settings.model_name
    env["MODELCANARY_KAFKA_BOOTSTRAP"] = settings.resolved_kafka_bootstrap()
    env["MODELCANARY_MLFLOW_URI"] = settings.resolved_mlflow_uri()
    env.setdefault("BENTOML_HOME", str(settings.data_dir / "bentoml"))
    command = bentoml_serve_command(settings, host, port, serving_dir())
    console.print(f"serving {env['MODELCANARY_MODEL']} on http://{host}:{port}")
    # Replace this process so that SIGTERM (docker stop, systemd) reaches bentoml itself
    # and its shutdown hook flushes pending events.
    os.execvpe(command[0], command, env)
