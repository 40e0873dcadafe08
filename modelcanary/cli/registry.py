"""Registry commands: `modelcanary register` and `modelcanary models`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from modelcanary.cli.app import app, console
from modelcanary.config import load_settings

TAG_PREFIX = "modelcanary."
_MAX_TAG_CHARS = 60

_URI_HELP = "MLflow URI (default: MODELCANARY_MLFLOW_URI or the server of `modelcanary up`)."


def _registry(tracking_uri: str | None):
    from modelcanary.registry import Registry

    return Registry(tracking_uri or load_settings().resolved_mlflow_uri())


@app.command()
def register(
    name: str = typer.Argument(..., help="Registered model name, e.g. demo-classifier."),
    model_uri: str = typer.Option(
        ...,
        "--model-uri",
        help="An MLflow model already logged: runs:/<run_id>/model, models:/<model_id>, "
        "or models:/<name>/<version>.",
    ),
    challenger: bool = typer.Option(
        False, "--challenger", help="Also point the `challenger` alias at the new version."
    ),
    description: str | None = typer.Option(None, help="Description of the new version."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=_URI_HELP),
) -> None:
    """Register an already-logged MLflow model as a new version of NAME.

    The first version of a model becomes its `champion`; later versions wait
    for a rollout, or get the `challenger` alias with --challenger.

    Examples:

      modelcanary register demo-classifier --model-uri runs:/3f2a9c/model

      modelcanary register demo-classifier --model-uri models:/m-7c1e --challenger

    From Python, one call logs and registers a fitted scikit-learn model:
    modelcanary.register(model, "demo-classifier", X_train)
    """
    from modelcanary.registry import CHALLENGER, CHAMPION

    registry = _registry(tracking_uri)
    version = registry.register_model_uri(name, model_uri, description=description)
    aliases = registry.aliases(name)
    if challenger and aliases.get(CHAMPION) != version:
        registry.set_alias(name, CHALLENGER, version)
        aliases[CHALLENGER] = version
    labels = sorted(alias for alias, v in aliases.items() if v == version)
    suffix = f" ({', '.join(labels)})" if labels else ""
    console.print(f"registered [bold]{name}[/] version [bold]{version}[/]{suffix}")


@app.command()
def models(
    name: str | None = typer.Argument(None, help="Show only this model's versions."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=_URI_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show registered models, their versions, aliases and modelcanary tags.

    Examples:

      modelcanary models

      modelcanary models demo-classifier --json
    """
    registry = _registry(tracking_uri)
    names = [name] if name else registry.list_models()
    listing = [
        {
            "model": model,
            "tags": _ours(registry.model_tags(model)),
            "versions": [
                {
                    "version": v.version,
                    "aliases": list(v.aliases),
                    "created_at": v.created_at.isoformat(timespec="seconds"),
                    "run_id": v.run_id,
                    "description": v.description,
                    "tags": _ours(v.tags),
                }
                for v in registry.list_versions(model)
            ],
        }
        for model in names
    ]
    if as_json:
        console.print_json(json.dumps(listing))
        return
    if not listing:
        console.print(
            "no registered models yet: run `python pipelines/train.py` or "
            "`modelcanary register NAME --model-uri URI`"
        )
        return
    for entry in listing:
        console.print(_table(entry))


def _ours(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(tags.items()) if k.startswith(TAG_PREFIX)}


def _short(value: str) -> str:
    return value if len(value) <= _MAX_TAG_CHARS else value[: _MAX_TAG_CHARS - 1] + "…"


def _table(entry: dict) -> Table:
    model_tags = "  ".join(f"{k}={_short(v)}" for k, v in entry["tags"].items())
    table = Table(
        title=f"[bold]{entry['model']}[/]",
        caption=model_tags or None,
        caption_justify="left",
    )
    for column in ("version", "aliases", "created (UTC)", "run", "tags", "description"):
        table.add_column(column, overflow="fold")
    for v in reversed(entry["versions"]):
        aliases = ", ".join(
            f"[bold green]{a}[/]" if a == "champion" else f"[bold yellow]{a}[/]"
            for a in v["aliases"]
        )
        table.add_row(
            v["version"],
            aliases,
            v["created_at"][:19].replace("T", " "),
            (v["run_id"] or "")[:8],
            "\n".join(f"{k}={_short(val)}" for k, val in v["tags"].items()),
            v["description"] or "",
        )
    return table
