"""Matplotlib figures of a rollout, for notebooks (``notebooks/review_rollout.ipynb``).

The same views as the HTML report, drawn from the DataFrames of :mod:`.frames`, so a
notebook only calls these and keeps no logic of its own. Matplotlib is imported when
a figure is first drawn (MLflow depends on it, so it is always installed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelcanary.report.frames import arms_frame, decisions_frame, drift_frame, gates_frame
from modelcanary.report.timeline import Rollout

CHALLENGER, CHAMPION, BAD = "#2563eb", "#d97706", "#b91c1c"
VERDICT_COLOURS = {"pass": "#15803d", "fail": BAD, "inconclusive": "#eab308"}


def _steps(ax: Any, rollout: Rollout) -> None:
    for t, index, fraction, mode in rollout.step_changes():
        ax.axvline(t, color="#9aa3b2", linestyle=":", linewidth=1)
        ax.annotate(
            f"step {index + 1}: {fraction:.0%} {mode}",
            (t, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color="#6b7280",
            xytext=(2, -10),
            textcoords="offset points",
        )


def plot_gates(rollout: Rollout) -> Any:
    """One panel per gate: estimate, anytime-valid interval, tolerance, verdicts."""
    import matplotlib.pyplot as plt

    frame = gates_frame(rollout)
    labels = list(dict.fromkeys(frame["gate"]))
    fig, axes = plt.subplots(
        max(len(labels), 1), 1, figsize=(9, 2.6 * max(len(labels), 1)), squeeze=False
    )
    for ax, label in zip(axes[:, 0], labels, strict=False):
        g = frame[frame["gate"] == label].astype({"estimate": float, "lower": float,
                                                  "upper": float, "tolerance": float})  # fmt: skip
        g = g[g["estimate"].notna()]  # evaluations before the gate had data draw nothing
        late = g.iloc[len(g) // 2 :]
        values = np.concatenate(
            [g["estimate"].dropna(), g["tolerance"].dropna(), late["lower"].dropna(),
             late["upper"].dropna(), [0.0]]
        )  # fmt: skip
        lo, hi = float(values.min()), float(values.max())
        pad = 0.15 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
        # an unbounded side of the interval is drawn to the edge of the panel
        ax.fill_between(g["t"], g["lower"].fillna(lo), g["upper"].fillna(hi), alpha=0.18,
                        color=CHALLENGER, label="anytime-valid interval")  # fmt: skip
        ax.plot(g["t"], g["estimate"], color=CHALLENGER, linewidth=1.8, label="estimate")
        ax.scatter(g["t"], g["estimate"], zorder=3,
                   c=[VERDICT_COLOURS.get(v, "#9ca3af") for v in g["verdict"]])  # fmt: skip
        if g["tolerance"].notna().any():
            ax.step(g["t"], g["tolerance"], where="post", color=BAD, linestyle="--",
                    label="margin")  # fmt: skip
        ax.axhline(0.0, color="#6b7280", linewidth=0.8)
        ax.set_ylim(lo, hi)
        verdict = g["verdict"].iloc[-1] if len(g) else ""
        ax.set_title(f"{label}: {verdict}", loc="left", fontsize=10)
        ax.set_ylabel("challenger - champion")
        _steps(ax, rollout)
    axes[-1, 0].set_xlabel("seconds since the rollout started")
    fig.tight_layout()
    return fig


def plot_arms(rollout: Rollout) -> Any:
    """Error rate and latency quantiles per arm over time."""
    import matplotlib.pyplot as plt

    frame = arms_frame(rollout)
    fig, (errors, latency) = plt.subplots(1, 2, figsize=(11, 3.2))
    for arm, colour in (("champion", CHAMPION), ("challenger", CHALLENGER)):
        a = frame[frame["arm"] == arm]
        errors.plot(a["t"], a["error_rate"].astype(float), color=colour, label=arm)
        for key, style in (("latency_p50", ":"), ("latency_p95", "-"), ("latency_p99", "--")):
            values = a[key].astype(float)
            if values.notna().any():
                latency.plot(a["t"], values, color=colour, linestyle=style,
                             label=f"{arm} {key.split('_')[1]}")  # fmt: skip
    if not latency.lines:  # no latency summary: the latency gates' quantiles
        gates = gates_frame(rollout)
        for label in dict.fromkeys(gates[gates["metric"].str.startswith("latency_p")]["gate"]):
            g = gates[gates["gate"] == label]
            latency.plot(g["t"], g["champion"], color=CHAMPION, label=f"champion {label}")
            latency.plot(g["t"], g["challenger"], color=CHALLENGER, label=f"challenger {label}")
    errors.set_title("error rate (so far)", loc="left", fontsize=10)
    latency.set_title("latency (ms)", loc="left", fontsize=10)
    for ax in (errors, latency):
        ax.set_xlabel("seconds since the rollout started")
        ax.legend(fontsize=8)
        _steps(ax, rollout)
    fig.tight_layout()
    return fig


def plot_drift(rollout: Rollout) -> Any:
    """Drift score per column (inputs and predictions) against the threshold."""
    import matplotlib.pyplot as plt

    frame = drift_frame(rollout)
    fig, ax = plt.subplots(figsize=(9, 0.3 * max(len(frame), 3) + 1))
    if len(frame):
        names = [f"{c} ({'input' if k == 'input_drift' else 'prediction'})"
                 for k, c in zip(frame["kind"], frame["column"], strict=True)]  # fmt: skip
        colours = [BAD if d else "#93c5fd" for d in frame["drifted"]]
        ax.barh(names, frame["score"].astype(float), color=colours)
        for y, threshold in enumerate(frame["threshold"].astype(float)):
            ax.plot([threshold, threshold], [y - 0.4, y + 0.4], color="black")
        ax.invert_yaxis()
    ax.set_xlabel("drift score (black: threshold; red: drifted)")
    fig.tight_layout()
    return fig


def plot_traffic(rollout: Rollout) -> Any:
    """The challenger's traffic share over time, one dot per decision."""
    import matplotlib.pyplot as plt

    frame = decisions_frame(rollout)
    fig, ax = plt.subplots(figsize=(9, 2.4))
    ax.step(frame["t"], frame["traffic_fraction"], where="post", color=CHALLENGER)
    colours = {"advance": CHALLENGER, "promote": "#15803d", "rollback": BAD, "halt": "#eab308"}
    ax.scatter(frame["t"], frame["traffic_fraction"],
               c=[colours.get(a, "#9ca3af") for a in frame["action"]], zorder=3)  # fmt: skip
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("challenger share")
    ax.set_xlabel("seconds since the rollout started")
    fig.tight_layout()
    return fig
