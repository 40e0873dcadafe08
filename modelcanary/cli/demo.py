"""`modelcanary demo`: the whole loop on one machine, in about three minutes."""

from __future__ import annotations

import typer

from modelcanary.cli.app import app, console
from modelcanary.config import load_settings


@app.command()
def demo(
    rate: float = typer.Option(200.0, help="Requests per second the simulator sends."),
    max_rollout_s: float = typer.Option(
        150.0, help="Give up on a rollout that has not ended after this many seconds."
    ),
) -> None:
    """Run the end-to-end demo: one candidate promoted, one rolled back.

    Starts its own embedded Kafka broker and MLflow server on free ports under
    <data dir>/demo, trains and registers a champion and two candidates, serves them with
    `bentoml serve`, drives HTTP traffic with late outcomes, runs the evaluator and the
    controller, and prints every decision with its reason. Leaves no process running.
    """
    from modelcanary.demo import demo_succeeded, run_demo

    if rate <= 0 or max_rollout_s <= 0:
        raise typer.BadParameter("--rate and --max-rollout-s must be positive")
    results = run_demo(load_settings(), console, rate_per_s=rate, max_rollout_s=max_rollout_s)
    if not demo_succeeded(results):
        console.print("[red]the demo did not end with one promotion and one rollback[/]")
        raise typer.Exit(1)
