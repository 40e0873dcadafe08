"""Several runs of ``serving_overhead.py`` taken together: the same figures over all rounds.

    python benchmarks/serving_overhead_pool.py out/run1_details.json out/run2_details.json \
        --json out/serving_overhead_pooled.json

On a shared host one run's ``ratio_canary_rps`` is the median of eight rounds, and the
rounds themselves move by ±8% when other tenants load the machine: two runs of the same
code have given 0.945 and 1.016. Pooling the rounds of every run (every one, not a
choice of them) gives the figure those runs measured together, with a bootstrap interval
that narrows as runs are added. Each run's rounds are already paired (canary and plain
measured in the same stretch of time), so pooling keeps the pairing.

Takes the ``--details`` files of the runs (each holds its rounds and its settings).
Runs whose settings differ in what changes the measurement (durations, rate,
concurrency, slices, pause, load generator, placement, worker pinning, whether the other
services ran) are refused: their rounds do not measure the same thing. So are runs of
different served code (the ``code`` hash in their details); runs from before the
benchmark recorded it are pooled with a note.

JSON: ``pooled`` (the shape of a run's JSON — ``plain``, ``canary``, ``shadow``,
``ratio_canary_rps``, ``added_p99_ms_canary``, ``added_p50_ms_shadow`` — over all
rounds, plus ``rounds``; ``ratio_canary_rps_interval_90``, a bootstrap interval of the
median that draws whole runs, since a run's rounds share its host's state and its
services' memory layouts (``..._by_round`` draws rounds: narrower, and too narrow when
runs differ); ``ratio_canary_rps_mean``; and ``cpu_ratio_saturation``: plain's over the
canary's worker CPU per request), and
``runs``: per run its file, rounds, ratio, interval, plain's CPU per request at saturation
(how slow the host was), load average and code hash; ``served_code_sha256`` and
``runs_without_code``. A table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, median
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serving_overhead import (  # noqa: E402
    clustered_median_interval,
    median_interval,
    round_ratios,
    summarise,
)

#: Settings that change what a round measures; runs must agree on them to be pooled.
MEASUREMENT_SETTINGS = (
    "saturation_s", "latency_s", "rate", "concurrency", "warmup_s", "others_run", "pause_s",
    "slices", "placement", "worker_cpus",
)  # fmt: skip


class PoolError(ValueError):
    """A details file that cannot be pooled; the message says which and why."""


def load_run(path: Path) -> dict[str, Any]:
    """A run's details; :class:`PoolError` if the file is not ``serving_overhead`` details."""
    try:
        details = json.loads(path.read_text())
    except FileNotFoundError:
        raise PoolError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoolError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(details, dict) or not details.get("rounds") or "settings" not in details:
        raise PoolError(
            f"{path}: not a details file of serving_overhead.py (write one with "
            "`python benchmarks/serving_overhead.py --json OUT --details DETAILS`)"
        )
    return details


def measurement(details: dict[str, Any]) -> dict[str, Any]:
    """What a run's rounds measure: the settings that matter and the load generator."""
    settings = details["settings"]
    return {key: settings.get(key) for key in MEASUREMENT_SETTINGS} | {
        "loadgen": details.get("loadgen")
    }


def served_code(details: dict[str, Any]) -> str | None:
    """The hash of the served files a run measured; None for runs that did not record it."""
    code = details.get("code")
    return code.get("served_code_sha256") if isinstance(code, dict) else None


def pool(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pooled figures and a summary per run; :class:`PoolError` if the runs differ."""
    first_name, first = next(iter(runs.items()))
    wanted = measurement(first)
    for name, details in runs.items():
        differing = {
            key: (wanted[key], value)
            for key, value in measurement(details).items()
            if value != wanted[key]
        }
        if differing:
            shown = ", ".join(
                f"{k}: {a} in {first_name}, {b} here" for k, (a, b) in differing.items()
            )
            raise PoolError(f"{name} was measured differently ({shown}): pool like runs only")
    codes = {name: served_code(details) for name, details in runs.items()}
    known = sorted({code for code in codes.values() if code is not None})
    if len(known) > 1:
        shown = ", ".join(f"{name}: {code}" for name, code in codes.items() if code is not None)
        raise PoolError(f"the runs measured different code ({shown}): pool one version's runs")
    rounds = [r for details in runs.values() for r in details["rounds"]]
    by_run = {name: round_ratios(details["rounds"]) for name, details in runs.items()}
    ratios = [ratio for run_ratios in by_run.values() for ratio in run_ratios]
    cpu_ratios = [
        r["plain_cpu_us_per_request_saturation"] / r["canary_cpu_us_per_request_saturation"]
        for r in rounds
    ]
    pooled = summarise(rounds) | {
        "rounds": len(rounds),
        # Runs drawn whole: a run's rounds share its host's state and its services' layouts.
        "ratio_canary_rps_interval_90": clustered_median_interval(list(by_run.values())),
        "ratio_canary_rps_interval_90_by_round": median_interval(ratios),
        "ratio_canary_rps_mean": round(mean(ratios), 3),
        "cpu_ratio_saturation": round(median(cpu_ratios), 3),
    }
    per_run = []
    for name, details in runs.items():
        run_ratios = by_run[name]
        per_run.append(
            {
                "file": name,
                "rounds": len(run_ratios),
                "ratio_canary_rps": round(median(run_ratios), 3),
                "ratio_canary_rps_interval_90": median_interval(run_ratios),
                "plain_cpu_us_per_request_saturation": round(
                    median(r["plain_cpu_us_per_request_saturation"] for r in details["rounds"]), 1
                ),
                "loadavg_1m": round(median(r["loadavg_1m_before"] for r in details["rounds"]), 2),
                "served_code_sha256": codes[name],
            }
        )
    return {
        "pooled": pooled,
        "runs": per_run,
        "measurement": wanted,
        "served_code_sha256": known[0] if known else None,
        "runs_without_code": [name for name, code in codes.items() if code is None],
    }


def table(result: dict[str, Any]) -> str:
    """The runs and the pooled figure as a plain-text table."""
    lines = [f"{'run':<40} {'rounds':>6} {'ratio':>6} {'90% interval':>15} {'plain CPU/req':>13}"]
    for run in result["runs"]:
        low, high = run["ratio_canary_rps_interval_90"]
        lines.append(
            f"{Path(run['file']).name:<40} {run['rounds']:>6} {run['ratio_canary_rps']:>6.3f} "
            f"{low:>7.3f}-{high:<7.3f} {run['plain_cpu_us_per_request_saturation']:>10.0f} us"
        )
    pooled = result["pooled"]
    low, high = pooled["ratio_canary_rps_interval_90"]
    lines.append(
        f"{'pooled':<40} {pooled['rounds']:>6} {pooled['ratio_canary_rps']:>6.3f} "
        f"{low:>7.3f}-{high:<7.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Pass every run of the version measured, not a choice of them.",
    )
    parser.add_argument("details", nargs="+", type=Path, help="--details files of the runs")
    parser.add_argument("--json", type=Path, help="write the pooled figures here")
    args = parser.parse_args(argv)
    if len(set(args.details)) != len(args.details):
        parser.error("a details file is given twice: its rounds would count double")
    try:
        result = pool({str(path): load_run(path) for path in args.details})
    except PoolError as exc:
        parser.exit(2, f"serving_overhead_pool: {exc}\n")
    print(table(result), file=sys.stderr)
    if result["runs_without_code"]:
        print(
            f"note: {len(result['runs_without_code'])} run(s) recorded no code version (taken "
            "before serving_overhead.py did): pool them only if they ran the same code",
            file=sys.stderr,
        )
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
