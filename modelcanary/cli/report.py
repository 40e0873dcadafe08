"""`modelcanary report MODEL`: write a rollout's evaluation report as one HTML file."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer

from modelcanary.cli.app import app, console
from modelcanary.config import load_settings


@app.command()
def report(
    model: str = typer.Argument(..., help="Registered model name."),
    rollout: str = typer.Option(
        None, "--rollout", help="Rollout id (default: the model's latest rollout)."
    ),
    out: Path = typer.Option(
        None, "--out", help="HTML file to write (default: ./ROLLOUT_ID.html)."
    ),
    open_it: bool = typer.Option(False, "--open", help="Open the report in a web browser."),
) -> None:
    """Write the evaluation report of MODEL's rollout: one self-contained HTML file.

    What was decided and why, on how much evidence; each gate over time;
    latency, errors, KPIs, drift, sample ratio; the policy and the timeline.
    The file needs no network to open.

    Example: modelcanary report demo-classifier --out report.html --open
    """
    from modelcanary.errors import RegistryError
    from modelcanary.registry import Registry
    from modelcanary.report import load_rollout, resolve_rollout_id, write_report

    registry = Registry(load_settings().resolved_mlflow_uri())
    rollout_id = resolve_rollout_id(registry, model, rollout)
    loaded = load_rollout(registry, rollout_id)
    if loaded.model != model:
        raise RegistryError(f"rollout {rollout_id} is a rollout of {loaded.model!r}, not {model!r}")
    path = write_report(loaded, out or Path(f"{rollout_id}.html"))
    console.print(
        f"{loaded.model} v{loaded.challenger_version}: [bold]{loaded.outcome}[/] — "
        f"{loaded.final.get('reason', '')}"
    )
    console.print(f"report: {path.resolve()}")
    if open_it:
        webbrowser.open(path.resolve().as_uri())
