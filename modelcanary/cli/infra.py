"""Commands that manage the embedded infrastructure: up, down, status."""

from __future__ import annotations

from rich.table import Table

from modelcanary.cli.app import app, console
from modelcanary.config import Settings, load_settings
from modelcanary.infra import embedded
from modelcanary.infra.embedded import ServiceState

_STYLE = {
    ServiceState.RUNNING: "green",
    ServiceState.STOPPED: "red",
    ServiceState.EXTERNAL: "cyan",
}


@app.command()
def up() -> None:
    """Start the embedded Kafka broker and MLflow server and create the topics.

    Data, logs and the record of what runs go to MODELCANARY_DATA_DIR (default
    ./.modelcanary). Running it again is harmless. Set MODELCANARY_KAFKA_BOOTSTRAP or
    MODELCANARY_MLFLOW_URI to use external services instead.

    Example: MODELCANARY_MLFLOW_PORT=5001 modelcanary up
    """
    settings = load_settings()
    with console.status("starting the embedded infrastructure…") as spinner:

        def progress(message: str) -> None:
            console.print(f"  {message}", soft_wrap=True)
            spinner.update(message)

        embedded.up(settings, on_progress=progress)
    _print_status(settings)


@app.command()
def down() -> None:
    """Stop the embedded broker and MLflow server (the broker's messages are lost).

    MLflow's database and artifacts stay in the data directory.

    Example: modelcanary down
    """
    settings = load_settings()
    with console.status("stopping the embedded infrastructure…"):
        embedded.down(
            settings, on_progress=lambda message: console.print(f"  {message}", soft_wrap=True)
        )


@app.command()
def status() -> None:
    """Show which services run, where, and with which pid.

    Example: modelcanary status
    """
    _print_status(load_settings())


def _print_status(settings: Settings) -> None:
    table = Table(title=f"modelcanary infrastructure ({settings.data_dir})", title_justify="left")
    for column in ("service", "state", "address", "pid", "log"):
        table.add_column(column)
    for row in embedded.status(settings):
        style = _STYLE[row.state]
        table.add_row(
            row.name,
            f"[{style}]{row.state.value}[/]",
            row.address or "-",
            str(row.pid) if row.pid is not None else "-",
            str(row.log) if row.log is not None else "-",
        )
    console.print(table)
