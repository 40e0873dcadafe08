"""`modelcanary rollout ...`: start a rollout and look at it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from modelcanary.cli.app import app, console
from modelcanary.config import load_settings

rollout_app = typer.Typer(
    help="Start and inspect rollouts of a candidate version against the champion.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")


def _controller():
    from modelcanary.controller import Controller
    from modelcanary.registry import Registry

    return Controller(Registry(load_settings().resolved_mlflow_uri()))


@rollout_app.command("start")
def start(
    model: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Candidate version to roll out."),
    policy: Path = typer.Option(
        None, "--policy", help="Policy YAML (steps, gates, alpha) [default: built-in policy]."
    ),
) -> None:
    """Start rolling out VERSION of MODEL: it becomes `challenger` and gets the first step.

    Example: modelcanary rollout start demo-classifier --version 3 --policy policy.yaml
    """
    from modelcanary.policy import default_policy, load_policy

    chosen = load_policy(policy) if policy else default_policy()
    rollout = _controller().start(model, version, chosen)
    console.print(
        f"started [bold]{rollout.rollout_id}[/]: version {rollout.challenger_version} vs "
        f"champion {rollout.champion_version}, {rollout.mode.value} at "
        f"{rollout.traffic_fraction:.0%}"
    )


@rollout_app.command("status")
def status(model: str = typer.Argument(..., help="Registered model name.")) -> None:
    """Show the model's current (or last) rollout: state, step and split."""
    controller = _controller()
    rollout = controller.store.load(model)
    if rollout is None:
        console.print(f"{model} has no rollout yet: start one with `modelcanary rollout start`")
        return
    table = Table(title=f"rollout of {model}")
    table.add_column("field")
    table.add_column("value")
    for name, value in (
        ("rollout", rollout.rollout_id),
        ("state", rollout.label),
        ("champion", rollout.champion_version),
        ("challenger", rollout.challenger_version),
        ("mode", rollout.mode.value),
        ("traffic to challenger", f"{rollout.traffic_fraction:.0%}"),
        ("last reason", rollout.reason),
    ):
        table.add_row(name, value)
    console.print(table)
