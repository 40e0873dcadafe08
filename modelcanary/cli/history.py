"""`modelcanary history MODEL`: every decision about a model's rollouts, as a table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.table import Table

from modelcanary.cli.app import app, console
from modelcanary.config import load_settings

_COLOURS = {"promote": "green", "rollback": "red", "halt": "yellow", "abort": "red"}


@app.command()
def history(
    model: str = typer.Argument(..., help="Registered model name."),
    holds: bool = typer.Option(False, "--holds", help="Also list 'hold' decisions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the decisions recorded for MODEL's rollouts (the audit trail in MLflow).

    Each row is an MLflow run in the experiment `modelcanary-rollouts` holding the
    decision's evidence, the policy in force and links to both model versions.

    Example: modelcanary history demo-classifier --holds
    """
    from modelcanary.audit import AuditLog
    from modelcanary.registry import Registry

    entries = AuditLog(Registry(load_settings().resolved_mlflow_uri())).history(model, holds)
    if as_json:
        console.print_json(json.dumps([e.__dict__ for e in entries]))
        return
    if not entries:
        console.print(f"no decisions recorded for {model} yet")
        return
    table = Table(title=f"decisions about {model}")
    for column in ("time (UTC)", "rollout", "decision", "state", "challenger", "reason", "run"):
        table.add_column(column, overflow="fold")
    for e in entries:
        colour = _COLOURS.get(e.action, "white")
        table.add_row(
            datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            e.rollout_id,
            f"[{colour}]{e.action}[/]"
            + ("" if e.applied or e.action == "hold" else " (not applied)"),
            f"{e.from_state} → {e.to_state}",
            f"{e.traffic_fraction:.0%}",
            e.reason,
            e.run_id[:8],
        )
    console.print(table)
