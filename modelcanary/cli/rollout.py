"""`modelcanary rollout ...`: drive rollouts through a serving replica's admin API.

Every command calls the admin endpoints of a serving replica (``--url``, default
MODELCANARY_SERVING_URL) with the bearer token (``--token``, default
MODELCANARY_ADMIN_TOKEN). Actions become decisions on the decisions topic, applied and
recorded by the controller like the judge's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelcanary.admin_client import AdminCallError, AdminClient
from modelcanary.cli.app import app, console
from modelcanary.config import load_settings

rollout_app = typer.Typer(
    help=(
        "Start, watch and steer rollouts through a serving replica's admin API "
        "(--url, --token; defaults from MODELCANARY_SERVING_URL and MODELCANARY_ADMIN_TOKEN)."
    ),
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")

URL = typer.Option(None, "--url", help="Serving replica [default: MODELCANARY_SERVING_URL].")
TOKEN = typer.Option(None, "--token", help="Admin token [default: MODELCANARY_ADMIN_TOKEN].")
REASON = typer.Option("", "--reason", "-r", help="Why: recorded with the decision.")
MODEL = typer.Argument(..., help="Registered model name (the replica must serve it).")


def _client(url: str | None, token: str | None) -> AdminClient:
    settings = load_settings()
    return AdminClient(url or settings.serving_url, token or settings.admin_token)


def _call(model: str, url: str | None, token: str | None, path: str,
          body: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    result = _client(url, token).call(path, {"model": model, **(body or {})})
    return result


@rollout_app.command("start")
def start(
    model: str = MODEL,
    version: str = typer.Option(..., "--version", help="Candidate version to roll out."),
    policy: Path = typer.Option(
        None, "--policy", help="Policy YAML (steps, gates, alpha) [default: built-in policy]."
    ),
    url: str = URL,
    token: str = TOKEN,
) -> None:
    """Start rolling out VERSION of MODEL: it becomes `challenger` and gets the first step.

    Example: modelcanary rollout start demo-classifier --version 3 --policy policy.yaml
    """
    from modelcanary.policy import load_policy

    body: dict[str, Any] = {"version": version}
    if policy is not None:
        body["policy"] = load_policy(policy).to_dict()  # validated here, with field names
    rollout = _call(model, url, token, "/admin/rollout/start", body)["rollout"]
    console.print(
        f"started [bold]{rollout['rollout_id']}[/]: version {rollout['challenger_version']} vs "
        f"champion {rollout['champion_version']}, {rollout['mode']} at "
        f"{rollout['traffic_fraction']:.0%}"
    )


def _act(model: str, action: str, reason: str, url: str | None, token: str | None,
         traffic_fraction: float | None = None) -> None:  # fmt: skip
    body: dict[str, Any] = {"action": action, "reason": reason}
    if traffic_fraction is not None:
        body["traffic_fraction"] = traffic_fraction
    decision = _call(model, url, token, "/admin/rollout/act", body)["decision"]
    console.print(
        f"{decision['action']}: {decision['from_state']} → {decision['to_state']} "
        f"(challenger at {decision['traffic_fraction']:.0%}); the controller applies it within "
        "a second"
    )


OPERATOR_ACTIONS = {
    "pause": "Freeze the split and stop automatic decisions until `resume`.",
    "resume": "Resume a paused or halted rollout (the step's clock restarts).",
    "approve": "Approve the current step's manual gate (`requires_approval: true` in the policy).",
    "promote": "Promote the challenger now: it becomes champion, whatever the gates say.",
    "rollback": "Roll the challenger back now: it stops serving and is tagged rolled_back.",
    "abort": "Abort the rollout (like a rollback, recorded as aborted).",
}


def _operator_command(action: str, help_text: str) -> None:
    def command(
        model: str = MODEL, reason: str = REASON, url: str = URL, token: str = TOKEN
    ) -> None:
        _act(model, action, reason, url, token)

    command.__doc__ = (
        f'{help_text}\n\nExample: modelcanary rollout {action} demo-classifier -r "why"'
    )
    rollout_app.command(action)(command)


for _action, _help in OPERATOR_ACTIONS.items():
    _operator_command(_action, _help)


@rollout_app.command("set-traffic")
def set_traffic(
    model: str = MODEL,
    fraction: float = typer.Argument(..., help="Share of units for the challenger, 0 to 1."),
    reason: str = REASON,
    url: str = URL,
    token: str = TOKEN,
) -> None:
    """Override the challenger's traffic fraction of the current step.

    Example: modelcanary rollout set-traffic demo-classifier 0.1 -r "hold it small overnight"
    """
    if not 0.0 <= fraction <= 1.0:
        raise typer.BadParameter(f"FRACTION {fraction} must be between 0 and 1")
    _act(model, "set_traffic", reason, url, token, traffic_fraction=fraction)


@rollout_app.command("status")
def status(model: str = MODEL, url: str = URL, token: str = TOKEN) -> None:
    """Show the rollout: state, step, split, and the last judgement's gates and samples."""
    result = _call(model, url, token, "/admin/rollout/status")
    rollout, latest = result.get("rollout"), result.get("latest_decision")
    if rollout is None:
        console.print(f"{model} has no rollout yet: start one with `modelcanary rollout start`")
        return
    table = Table(title=f"rollout {rollout['rollout_id']}", show_header=False)
    for name, value in (
        ("state", rollout["label"]),
        ("champion / challenger", f"v{rollout['champion_version']} / "
                                  f"v{rollout['challenger_version']}"),
        ("mode", rollout["mode"]),
        ("traffic to challenger", f"{rollout['traffic_fraction']:.0%}"),
        ("last change", rollout["reason"]),
    ):  # fmt: skip
        table.add_row(name, str(value))
    console.print(table)
    if latest:
        console.print(f"[bold]last judgement[/] ({latest['action']}): {latest['reason']}")
        gates = Table("gate", "verdict", "estimate \\[interval]", "margin", "samples", "needed")
        for gate in latest.get("evidence", {}).get("gates", []):
            low, high = (gate.get("interval") or [None, None])[:2]
            samples = gate.get("samples") or {}
            gates.add_row(
                str(gate.get("gate")), str(gate.get("verdict")),
                f"{_num(gate.get('estimate'))} [{_num(low)}, {_num(high)}]",
                str(gate.get("margin", "")),
                f"{samples.get('champion', 0)} / {samples.get('challenger', 0)}",
                str(gate.get("samples_needed") or ""),
            )  # fmt: skip
        console.print(gates)
        slos = latest.get("evidence", {}).get("slos")
        if slos:
            console.print(_slo_table(slos))


def _slo_table(slos: dict[str, Any]) -> Table:
    """One row per SLO and window pair: the challenger's good share and burn rate in the
    long / short window, the burn rate's lower bound, the limit, the champion's burn."""
    table = Table(
        "SLO", "verdict", "windows", "challenger good", "burn rate \\[at least]", "limit",
        "champion burn", title=f"error budgets (alpha {_num(slos.get('alpha'))})",
    )  # fmt: skip
    for slo in slos.get("objectives", []):
        name = str(slo.get("slo"))
        if slo.get("threshold_ms") is not None:
            name += f" <= {slo['threshold_ms']:g} ms"
        name += f" ({100 * slo.get('objective', 0):g}%)"
        for w in slo.get("windows", []) or [{}]:
            chal, champ = w.get("challenger") or {}, w.get("champion") or {}
            long, short = chal.get("long") or {}, chal.get("short") or {}
            table.add_row(
                name, str(w.get("verdict", slo.get("verdict"))),
                f"{w.get('long_s', '…')} s / {w.get('short_s', '…')} s",
                f"{_pct(long.get('good_share'))} / {_pct(short.get('good_share'))}",
                f"{_num(w.get('burn_rate'))}x / {_num(w.get('short_burn_rate'))}x "
                f"[{_num(w.get('burn_rate_lower'))}x]",
                f"{_num(w.get('max_multiple'))}x",
                f"{_num((champ.get('long') or {}).get('burn_rate'))}x",
            )  # fmt: skip
    return table


def _pct(value: Any) -> str:
    return "…" if not isinstance(value, float | int) else f"{100 * value:.2f}%"


def _num(value: Any) -> str:
    return "…" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


__all__ = ["AdminCallError", "rollout_app"]
