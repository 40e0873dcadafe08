"""Root Typer app: global error handling so users get one line with the fix, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from modelcanary.errors import ModelcanaryError

app = typer.Typer(
    name="modelcanary",
    help=(
        "Release new versions of ML models safely: canary and shadow rollouts of MLflow "
        "models, judged with anytime-valid statistics.\n\n"
        "Quick start: `modelcanary up` starts an embedded Kafka broker and MLflow server; "
        "`modelcanary down` stops them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Logs and CI are not terminals: give tables room instead of rich's 80-column fallback.
console = Console() if sys.stdout.isatty() else Console(width=140)
err_console = Console(stderr=True)


def _register_commands() -> None:
    # Imported for their side effect of adding commands to `app`.
    from modelcanary.cli import commands  # noqa: F401


def main() -> None:
    _register_commands()
    try:
        app()
    except ModelcanaryError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
