"""The ``modelcanary`` command line: one Typer app, one module per group of commands."""

from __future__ import annotations

from modelcanary.cli.app import app, main

__all__ = ["app", "main"]
