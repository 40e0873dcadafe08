"""What modelcanary costs over serving the model alone: throughput and latency.

    python benchmarks/serving_overhead.py --json out/serving_overhead.json

Starts an embedded broker and MLflow server in a temporary folder, registers the demo
classifier three times, and serves it three ways at once, each a real ``bentoml serve``
with one worker:

- ``plain``: ``benchmarks/plain_service.py``: BentoML, the same predictor and input
  validation, nothing else;
- ``canary``: modelcanary with a 10% canary of a second version, every call logged to
  Kafka, metrics on;
- ``shadow``: modelcanary mirroring 100% of the requests to the second version.

Load comes from a separate process. The same request (no unit id, so every request is
routed by its fresh request id) is sent to all three. Each round has two phases, and
each phase is cut into ``--slices`` slices run interleaved (a b c a b c ...), so that
drift of the shared machine hits all alike:

1. saturation: ``--concurrency`` connections as fast as they go, ``--saturation-s`` per
   variant in all (throughput: the mean over the slices), from ``hey`` (Debian package
   ``hey``) when it is on the PATH, else from an asyncio HTTP/1.1 keep-alive client in a
   child Python process;
2. latency: a fixed ``--rate`` requests/s, well below saturation, ``--latency-s`` per
   variant in all, each request's latency recorded (pooled). Always from the asyncio
   client, whose connections send in turn, evenly spaced, so that no request waits
   behind another and the latency is the service's cost per request. (``hey -q`` gives
   each connection a ticker of its own, all started at once: its connections send
   together, in bursts, and each request of a burst queues behind the ones before it.
   Its median then mostly measured that queueing, and shadow's mirrored calls, run on
   the service's CPU right after each answer, were counted as many times as a burst had
   requests behind them.)

While a slice runs, the two other services are stopped (SIGSTOP of their process trees,
continued afterwards; ``--others-run`` lets them run): their idle background work (an
idle modelcanary worker ~4.5 ms of CPU a second, plain ~1.4) no longer falls on the
measured variant's CPU. After each slice the load pauses for ``--pause-s`` (0.3 s), so
that what a slice's requests left behind (the canary's last round of Kafka events, a
shadow's queued mirrored calls) runs before the next variant's slice rather than inside
it; the CPU the service spends in the pause (its *spill*) is charged to its slice: the
throughput is ``answered / (duration + spill)``. Earlier versions of this benchmark did neither: the
spill and the idle background slowed whichever variant was measured, plain more than
the canary (plain follows the shadow, and sits beside two modelcanary services), which
favoured the canary by about 0.6%.

The three services are started ``--starts`` times, as fresh processes, and the rounds are
shared out between the starts. Each start draws a new memory layout and hash seed, which
alone moves a service's CPU per request by 1-2% (see ``serving_inprocess.py``): with one
start, a whole run would hinge on one draw per variant.

Each figure is the median over ``--rounds`` rounds. The comparisons are paired by round —
``ratio_canary_rps`` is the median of the rounds' canary/plain ratios, ``added_*`` the
median of the rounds' differences — so that a round slowed down by something else on the
machine moves both sides of its comparison and little else. The JSON holds exactly:
``plain``, ``canary``, ``shadow`` (each ``rps``, ``p50_ms``, ``p99_ms``),
``ratio_canary_rps``, ``added_p99_ms_canary``, ``added_p50_ms_shadow`` and
``placement``. Per-round figures go to stderr and, with ``--details PATH``, to a second
JSON file together with the CPU time the serving worker spent per answered request in
each phase, its spill included (``*_spill_ms_*``: the spill per round) — a figure the
other processes on a shared machine disturb far less than throughput or latency (at 100
requests/s it includes the worker's idle background work, about 5 ms a second) — the
worker's busy fraction at saturation (near 1: the service, not the load generator, was
the limit), the machine's load average per round, and each round's canary/plain ratio
with a 90% bootstrap interval of their median (``ratio_canary_rps_interval_90``: how far
the run's figure could have landed on the same host), and which code was measured
(``code``: a hash of the served files and the commit). ``serving_overhead_pool.py`` takes
the details of several runs of the same code together.
Targets: ratio >= 0.95, added p99 <= 1 ms, added shadow p50 <= 1 ms.

Placement (``--placement``). ``isolated`` (the default) runs the three services under
test on one CPU and the load generator, the broker, MLflow and this driver on the
others, as in production, where neither load nor broker runs on the serving host: a
service's own background threads (the Kafka sender, librdkafka, a challenger's thread)
then cost what they would cost there, and neither variant competes with ``hey`` or with
the broker ingesting the canary's events. ``shared`` lets every process run on every
CPU. With fewer than two usable CPUs ``isolated`` falls back to ``shared`` and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

VARIANTS = ("plain", "canary", "shadow")

#: What the three services run: runs of the same files measure the same code.
SERVED_CODE = ("modelcanary", "serving", "benchmarks/plain_service.py")


def code_version() -> dict[str, Any]:
    """Which code a run measured: a hash of the served files, and the commit if known.

    The hash covers every Python file the services run (:data:`SERVED_CODE`), so that runs
    taken at different commits of the same served code can be pooled
    (``serving_overhead_pool.py``) and runs of different code cannot.
    """
    digest = hashlib.sha256()
    for entry in SERVED_CODE:
        path = REPO_ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(f"{file.relative_to(REPO_ROOT)}\0".encode())
            digest.update(file.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"served_code_sha256": digest.hexdigest()[:16], "commit": commit}


# -- where the processes run ----------------------------------------------------------
def plan_placement(requested: str) -> dict[str, Any]:
    """Which CPUs the services under test get, and which the rest (load, broker, MLflow).

    ``isolated`` gives the three ``bentoml serve`` trees one CPU and everything else the
    others, as on a real serving host, where neither the load generator nor the broker
    runs: each service's own threads then compete with its request thread only, never
    with ``hey``. It needs two usable CPUs; with fewer the run falls back to ``shared``
    (everything on every CPU) and says so in ``note``.
    """
    usable = sorted(os.sched_getaffinity(0))
    if requested == "isolated" and len(usable) >= 2:
        return {
            "requested": requested,
            "placement": "isolated",
            "service_cpus": usable[-1:],
            "other_cpus": usable[:-1],
            "note": None,
        }
    note = None
    if requested == "isolated":
        note = f"only {len(usable)} usable CPU(s): fell back to shared"
    return {
        "requested": requested,
        "placement": "shared",
        "service_cpus": usable,
        "other_cpus": usable,
        "note": note,
    }


def worker_cpus_option(text: str) -> str:
    """argparse ``type`` of ``--worker-cpus``: the text if MODELCANARY_WORKER_CPUS takes it."""
    from modelcanary.cpu_affinity import parse_worker_cpus
    from modelcanary.errors import ConfigError

    try:
        parse_worker_cpus(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _pin_calling_thread(cpus: list[int]) -> None:
    """Children started from this thread from now on inherit ``cpus`` (Linux: per thread)."""
    os.sched_setaffinity(0, cpus)


def _tree_threads(pid: int) -> list[int]:
    """Thread ids of ``pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    tids: list[int] = []
    for process in processes:
        try:
            tids += [t.id for t in process.threads()]
        except psutil.Error:
            continue
    return tids


def enforce_placement(pids: list[int], cpus: list[int]) -> int:
    """Pin every thread of the process trees ``pids`` to ``cpus``; how many had to move.

    Children inherit the mask of the thread that started them, so this normally finds
    nothing to move; it is checked (and corrected) before every round anyway, because a
    worker restarted by BentoML's arbiter must not escape the placement.
    """
    wanted = set(cpus)
    moved = 0
    for pid in pids:
        for tid in _tree_threads(pid):
            try:
                if os.sched_getaffinity(tid) != wanted:
                    os.sched_setaffinity(tid, wanted)
                    moved += 1
            except OSError:  # the thread ended meanwhile
                continue
    return moved


def check_placement(placement: dict[str, Any], serve_pids: list[int], other_pids: list[int]) -> int:
    """With ``isolated`` placement, :func:`enforce_placement` on both sides; threads moved."""
    if placement["placement"] != "isolated":
        return 0
    return enforce_placement(serve_pids, placement["service_cpus"]) + enforce_placement(
        other_pids, placement["other_cpus"]
    )


# -- the load generators (run in their own process) -----------------------------------
def _hey(url: str, body: Path, seconds: float, concurrency: int) -> dict:
    """Saturation: ``concurrency`` connections as fast as they go."""
    command = ["hey", "-z", f"{seconds}s", "-m", "POST", "-T", "application/json"]
    command += ["-D", str(body), "-t", "10", "-c", str(concurrency)]
    started = time.perf_counter()
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - started
    rps = next(float(line.split(":")[1]) for line in out.splitlines() if "Requests/sec" in line)
    counts = {
        line.strip()[1:4]: int(line.split("responses")[0].split("]")[1])
        for line in out.splitlines()
        if line.strip().startswith("[") and "responses" in line
    }
    errors = sum(n for status, n in counts.items() if status != "200")
    ok = counts.get("200", 0)
    return {"rps": rps, "errors": errors, "ok": ok, "elapsed_s": elapsed}


async def _python_load(
    url: str, body: bytes, seconds: float, concurrency: int, rate: float | None
) -> dict:
    """Keep-alive HTTP/1.1 POSTs over raw asyncio streams (no client library overhead)."""
    host_port, path = url.split("//", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    request = (
        f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200")

    async def closed_loop() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await one(reader, writer)
            latencies.append((time.perf_counter() - started) * 1000.0)
            errors += not ok
        writer.close()

    async def open_loop(interval: float, offset: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        next_at = time.perf_counter() + offset
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            started = time.perf_counter()
            ok = await one(reader, writer)
            latencies.append((time.perf_counter() - started) * 1000.0)
            errors += not ok
            next_at += interval
        writer.close()

    started = time.perf_counter()
    if rate is None:
        await asyncio.gather(*(closed_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        return {
            "rps": len(latencies) / elapsed,
            "errors": errors,
            "ok": len(latencies) - errors,
            "elapsed_s": elapsed,
        }
    workers = max(1, min(concurrency, int(rate // 25) or 1))
    interval = workers / rate
    await asyncio.gather(*(open_loop(interval, i * interval / workers) for i in range(workers)))
    return {"latencies_ms": latencies, "errors": errors, "elapsed_s": time.perf_counter() - started}


def _loadgen_main(spec: str) -> None:
    args = json.loads(spec)
    body = Path(args["body"]).read_bytes()
    result = asyncio.run(
        _python_load(args["url"], body, args["seconds"], args["concurrency"], args["rate"])
    )
    json.dump(result, sys.stdout)


def run_load(
    tool: str, url: str, body: Path, seconds: float, concurrency: int, rate: float | None
) -> dict:
    """Saturation (``rate`` None) with ``tool``; a fixed rate always with the asyncio client."""
    if tool == "hey" and rate is None:
        return _hey(url, body, seconds, concurrency)
    spec = json.dumps(
        {"url": url, "body": str(body), "seconds": seconds, "concurrency": concurrency,
         "rate": rate}
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen-worker", spec],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


# -- the services ---------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def round_ratios(rounds: list[dict[str, Any]]) -> list[float]:
    """Each round's canary/plain throughput ratio: the paired comparison of that round."""
    return [r["canary_rps"] / r["plain_rps"] for r in rounds]


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; comparisons paired within each round (see the docstring)."""

    def over(key: str) -> float:
        return float(median(r[key] for r in rounds))

    summary: dict[str, Any] = {
        v: {
            "rps": round(over(f"{v}_rps"), 1),
            "p50_ms": round(over(f"{v}_p50_ms"), 3),
            "p99_ms": round(over(f"{v}_p99_ms"), 3),
        }
        for v in VARIANTS
    }
    summary["ratio_canary_rps"] = round(median(round_ratios(rounds)), 3)
    summary["added_p99_ms_canary"] = round(
        median(r["canary_p99_ms"] - r["plain_p99_ms"] for r in rounds), 3
    )
    summary["added_p50_ms_shadow"] = round(
        median(r["shadow_p50_ms"] - r["plain_p50_ms"] for r in rounds), 3
    )
    return summary


def median_interval(values: list[float], level: float = 0.9, draws: int = 2000) -> list[float]:
    """A bootstrap interval of the median of ``values`` (percentile method, fixed seed).

    How far a run's median could move from one run to the next on the same host: the
    rounds are drawn again with replacement ``draws`` times, and the middle ``level`` of
    those medians is the interval.
    """
    return clustered_median_interval([[value] for value in values], level, draws)


def clustered_median_interval(
    clusters: list[list[float]], level: float = 0.9, draws: int = 2000
) -> list[float]:
    """:func:`median_interval` of all values, drawing whole clusters (e.g. runs) at a time.

    Values of one cluster share what the others do not (a run: its host's state and its
    services' memory layouts), so drawing clusters rather than values gives the wider,
    honest interval when they differ more between clusters than within.
    """
    rng = random.Random(0)
    medians = sorted(
        median([value for cluster in rng.choices(clusters, k=len(clusters)) for value in cluster])
        for _ in range(draws)
    )
    tail = (1.0 - level) / 2.0
    low = medians[int(tail * (draws - 1))]
    high = medians[round((1.0 - tail) * (draws - 1))]
    return [round(low, 4), round(high, 4)]


def _worker_cpu_s(serve_pid: int) -> float:
    """CPU seconds used so far by the worker processes of one ``bentoml serve``.

    In nanoseconds from the process's CPU-time clock where Linux has it (all threads,
    ended ones too): the ``cpu_times`` of psutil count in ticks of 10 ms, as much as a
    service's deferred work after a slice (see :func:`measure_round`).
    """
    import psutil

    total = 0.0
    for child in psutil.Process(serve_pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker.service" not in " ".join(child.cmdline()):
                continue
            spent_ns = _process_cpu_ns(child.pid)
            if spent_ns is None:
                times = child.cpu_times()
                total += times.user + times.system
            else:
                total += spent_ns / 1e9
        except psutil.Error:
            continue
    return total


def _process_cpu_ns(pid: int) -> int | None:
    """Nanoseconds process ``pid`` has run so far, all its threads; None where unreadable.

    Linux's CPU-time clock of another process: ``clock_getcpuclockid`` makes its id as
    ``(~pid << 3) | 2`` (CPUCLOCK_SCHED, the whole thread group), which Python's
    ``clock_gettime`` takes as it is.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        return time.clock_gettime_ns((~pid << 3) | 2)
    except OSError:
        return None


def start_backends(root: Path) -> tuple[Any, list[Any], dict]:
    """Broker and MLflow, the models registered; returns settings, handles to stop, a row.

    One registered model per variant, ``bench-<variant>``, whose champion is the demo's
    baseline classifier; ``bench-canary`` has a 10% canary and ``bench-shadow`` a 100%
    shadow rollout of a second version. The settings point at the broker and MLflow.
    """
    from modelcanary.config import Settings, Topics
    from modelcanary.controller import Controller
    from modelcanary.demo_data import load_demo_dataset, train_variant
    from modelcanary.events import Mode
    from modelcanary.infra.broker import start_broker
    from modelcanary.infra.mlflow_server import mlflow_url, start_mlflow_server
    from modelcanary.infra.processes import free_port
    from modelcanary.infra.topics import ensure_topics
    from modelcanary.policy import Policy, Step
    from modelcanary.registry import Registry

    handles: list[Any] = []
    broker_port, mlflow_port = free_port(), free_port()
    handles.append(start_broker(broker_port, root / "broker.log"))
    handles.append(start_mlflow_server(mlflow_port, root / "mlflow", root / "mlflow.log"))
    base = Settings(
        data_dir=root / "data",
        kafka_bootstrap=f"127.0.0.1:{broker_port}",
        mlflow_uri=mlflow_url(mlflow_port),
        topics=Topics("bench"),
        partitions=4,
    )
    ensure_topics(base.kafka_bootstrap or "", base.topics.all(), base.partitions)
    registry = Registry(base.mlflow_uri or "")
    controller = Controller(registry)
    dataset = load_demo_dataset()
    champion = train_variant("baseline", dataset)
    challenger = train_variant("good", dataset)
    sample = dataset.X_train.head(3)
    for variant in VARIANTS:
        registry.register_sklearn(f"bench-{variant}", champion, sample)
    for variant, fraction, mode in (("canary", 0.1, Mode.CANARY), ("shadow", 1.0, Mode.SHADOW)):
        version = registry.register_sklearn(f"bench-{variant}", challenger, sample)
        controller.start(f"bench-{variant}", version, Policy(steps=(Step(fraction, mode=mode),)))
    return base, handles, dataset.X_test.iloc[0].to_dict()


def clean_up(handles: list[Any], root: Path, *, keep: bool) -> None:
    """Stop the started processes, newest first; remove the temporary folder unless ``keep``."""
    from modelcanary.infra.processes import stop_processes

    if handles:
        stop_processes(list(reversed(handles)), timeout_s=10)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


def start_variants(
    base: Any, root: Path, placement: dict[str, Any], start: int
) -> tuple[dict[str, str], list[Any]]:
    """The three served variants, fresh processes; returns urls and their handles.

    The handles are the variants' ``bentoml serve`` processes, in VARIANTS order. They
    start on ``placement["service_cpus"]`` (their workers and threads inherit it).
    """
    from modelcanary.infra.processes import free_port, http_ok, start_detached, wait_until_ready
    from modelcanary.launch import REPO_ROOT as ROOT
    from modelcanary.launch import bentoml_serve_command, component_env, start_serving

    handles: list[Any] = []
    urls: dict[str, str] = {}
    _pin_calling_thread(placement["service_cpus"])
    try:
        plain = base.with_overrides(model_name="bench-plain")
        port = free_port()
        log = root / f"plain-{start}.log"
        command = bentoml_serve_command(
            plain, "127.0.0.1", port, ROOT, service="benchmarks.plain_service:PlainService"
        )
        env = component_env(plain) | {"BENTOML_HOME": str(root / "bentoml")}
        handle = start_detached(command, log_path=log, env=env, cwd=ROOT)
        handles.append(handle)
        urls["plain"] = f"http://127.0.0.1:{port}"
        wait_until_ready(
            lambda: http_ok(f"{urls['plain']}/readyz"),
            what="plain service",
            process=handle,
            log_path=log,
            timeout_s=90,
        )
        for variant in ("canary", "shadow"):
            component = start_serving(
                base.with_overrides(model_name=f"bench-{variant}"), free_port()
            )
            handles.append(component.process)
            urls[variant] = component.url or ""
    except BaseException:
        clean_up(handles, root, keep=True)
        raise
    finally:
        _pin_calling_thread(placement["other_cpus"])
    return urls, handles


@contextlib.contextmanager
def paused(serve_pids: list[int]) -> Iterator[None]:
    """The ``bentoml serve`` process trees of ``serve_pids`` stopped (SIGSTOP) meanwhile.

    A service that is not being measured still runs its background work (MLflow poll,
    decision watcher, Kafka sender: an idle canary or shadow ~4.5 ms of CPU a second, plain
    ~1.4): on the one service CPU that work slowed whichever variant was measured, plain
    (beside two modelcanary services) more than the canary. Stopped, it waits; each
    variant runs alone on its CPU, as on a core of its own. Always continued on the way out.
    """
    import psutil

    stopped: list[Any] = []
    try:
        for pid in serve_pids:
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in tree:
                try:
                    process.suspend()
                    stopped.append(process)
                except psutil.Error:
                    continue
        yield
    finally:
        for process in stopped:
            with contextlib.suppress(psutil.Error):
                process.resume()


def charged_rps(result: dict[str, Any], spill_s: float) -> float:
    """A saturation slice's answered requests per second, its service's spill charged.

    ``result`` is the load generator's (``rps`` over all responses, ``ok``, ``errors``);
    the slice lasted ``(ok + errors) / rps`` seconds, and the ``spill_s`` seconds of CPU
    the service spent after it are added to that.
    """
    if result["rps"] <= 0:
        return 0.0
    duration = (result["ok"] + result["errors"]) / result["rps"]
    return result["ok"] / (duration + spill_s)


def measure_round(
    tool: str, urls: dict[str, str], body: Path, serve_pids: dict[str, int], args: Any
) -> dict[str, Any]:
    """One round: saturation, then fixed-rate latency, each in ``args.slices`` slices.

    The slices are interleaved (a b c a b c ...), so that within a round every variant is
    measured across the same stretch of time: a burst of load from another process on the
    shared machine then falls on all three instead of on whichever ran at that moment.
    Throughput is the mean over a variant's slices; latencies are pooled. The worker's
    CPU time per answered request is recorded for both phases.

    Meanwhile the other variants' services are stopped (:func:`paused`) unless
    ``args.others_run``. After each slice the load stops for ``args.pause_s`` before the
    next variant's slice, and the CPU the slice's service used meanwhile is its *spill*:
    work the slice's requests left behind (the canary's last round of events, a shadow's
    mirrored calls still queued). Without the pause that work ran inside the next
    variant's slice and slowed it instead (measured: plain's slices lost 1.8% of their CPU
    to the others, the canary's 1.2%, favouring the canary by about 0.6%). A saturation slice's
    throughput is charged with its spill, as on a core of its own the service would have
    spent that time instead of answering: ``ok / (duration + spill)``.
    """
    record: dict[str, Any] = {"loadavg_1m_before": round(os.getloadavg()[0], 2)}
    rps: dict[str, list[float]] = {v: [] for v in VARIANTS}
    saturation_wall = dict.fromkeys(VARIANTS, 0.0)
    latencies: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu = {f"{v}_{phase}": 0.0 for v in VARIANTS for phase in ("saturation", "latency")}
    answered = dict.fromkeys(cpu, 0)
    spilled = dict.fromkeys(cpu, 0.0)
    for v in VARIANTS:
        record[f"{v}_saturation_errors"] = record[f"{v}_latency_errors"] = 0
    for phase, seconds, rate in (
        ("saturation", args.saturation_s, None),
        ("latency", args.latency_s, args.rate),
    ):
        for _ in range(args.slices):
            for v in VARIANTS:
                others = [] if args.others_run else [serve_pids[o] for o in VARIANTS if o != v]
                with paused(others):
                    before = _worker_cpu_s(serve_pids[v])
                    result = run_load(
                        tool, f"{urls[v]}/predict", body, seconds / args.slices,
                        args.concurrency, rate,
                    )  # fmt: skip
                    after = _worker_cpu_s(serve_pids[v])
                    time.sleep(args.pause_s)
                    spill = _worker_cpu_s(serve_pids[v]) - after
                cpu[f"{v}_{phase}"] += after - before + spill
                spilled[f"{v}_{phase}"] += spill
                record[f"{v}_{phase}_errors"] += result["errors"]
                if rate is None:
                    rps[v].append(charged_rps(result, spill))
                    saturation_wall[v] += result["elapsed_s"]
                    answered[f"{v}_{phase}"] += result["ok"]
                else:
                    latencies[v] += result["latencies_ms"]
                    answered[f"{v}_{phase}"] += len(result["latencies_ms"])
    record["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    for v in VARIANTS:
        # Busy fraction of the worker at saturation: near 1 means the service, not the load
        # generator, limited the throughput (with ``isolated`` placement: of its one CPU).
        record[f"{v}_worker_busy_saturation"] = round(
            (cpu[f"{v}_saturation"] - spilled[f"{v}_saturation"]) / max(1e-9, saturation_wall[v]),
            3,
        )
        record[f"{v}_rps"] = sum(rps[v]) / len(rps[v])
        record[f"{v}_samples"] = len(latencies[v])
        record[f"{v}_p50_ms"] = _percentile(latencies[v], 0.5)
        record[f"{v}_p99_ms"] = _percentile(latencies[v], 0.99)
        for phase in ("saturation", "latency"):
            served = max(1, answered[f"{v}_{phase}"])
            record[f"{v}_cpu_us_per_request_{phase}"] = round(cpu[f"{v}_{phase}"] / served * 1e6, 1)
            record[f"{v}_spill_ms_{phase}"] = round(spilled[f"{v}_{phase}"] * 1e3, 2)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write the result here")
    parser.add_argument("--details", type=Path, help="write per-round figures here")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--starts",
        type=int,
        default=4,
        help="start the services this many times, fresh processes, the rounds shared out",
    )
    parser.add_argument("--saturation-s", type=float, default=3.0)
    parser.add_argument("--latency-s", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s of the latency run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument(
        "--others-run",
        action="store_true",
        help="let the services not being measured run their background work meanwhile "
        "(by default they are stopped with SIGSTOP, so each variant runs alone on its CPU)",
    )
    parser.add_argument(
        "--pause-s",
        type=float,
        default=0.3,
        help="no load for this long after each slice: the slice's service finishes what its "
        "requests left behind (longer than the 200 ms the Kafka sender waits), charged to it",
    )
    parser.add_argument(
        "--slices", type=int, default=3, help="interleaved slices per phase and round"
    )
    parser.add_argument("--loadgen", choices=("auto", "hey", "python"), default="auto")
    parser.add_argument(
        "--placement",
        choices=("isolated", "shared"),
        default="isolated",
        help="isolated: services under test on one CPU, load/broker/MLflow on the others",
    )
    parser.add_argument(
        "--worker-cpus",
        default="off",
        type=worker_cpus_option,
        help="MODELCANARY_WORKER_CPUS of all three services (off, dedicated, auto or a CPU "
        "list): auto pins each worker to one CPU of those its service may use; dedicated "
        "(the product's default) pins only where a service may use one CPU per worker, "
        "which isolated placement makes a no-op and shared never does",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not 1 <= args.starts <= args.rounds:
        parser.error(f"--starts must be between 1 and --rounds ({args.rounds})")
    if args.pause_s < 0:
        parser.error("--pause-s must be 0 or more")
    tool = args.loadgen
    if tool == "auto":
        tool = "hey" if shutil.which("hey") else "python"
    for name, value in {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
        "BENTOML_DO_NOT_TRACK": "true",
    }.items():
        os.environ.setdefault(name, value)
    placement = plan_placement(args.placement)
    if placement["note"]:
        print(f"placement: {placement['note']}", file=sys.stderr)
    _pin_calling_thread(placement["other_cpus"])
    code = code_version()
    root = Path(tempfile.mkdtemp(prefix="modelcanary-bench-"))
    from modelcanary.infra.processes import stop_processes

    handles: list[Any] = []
    try:
        base, handles, row = start_backends(root)
        base = base.with_overrides(worker_cpus=args.worker_cpus)
        other_pids = [h.pid for h in handles]
        body = root / "body.json"
        body.write_text(json.dumps({"features": row}))
        rounds: list[dict[str, Any]] = []
        per_start = [
            args.rounds // args.starts + (index < args.rounds % args.starts)
            for index in range(args.starts)
        ]
        for start, count in enumerate(per_start):
            print(f"start {start + 1}/{args.starts}: serving the three variants anew",
                  file=sys.stderr)  # fmt: skip
            urls, served = start_variants(base, root, placement, start)
            try:
                serve_pids = {v: h.pid for v, h in zip(VARIANTS, served, strict=True)}
                moved = check_placement(placement, list(serve_pids.values()), other_pids)
                placement.setdefault("threads_moved_at_start", []).append(moved)
                for variant in VARIANTS:  # warm up: first calls load code, fill caches
                    run_load(tool, f"{urls[variant]}/predict", body, args.warmup_s, 4, None)
                for _ in range(count):
                    moved = check_placement(placement, list(serve_pids.values()), other_pids)
                    record = measure_round(tool, urls, body, serve_pids, args)
                    rounds.append(
                        {"round": len(rounds), "start": start, "threads_moved": moved, **record}
                    )
                    print(json.dumps(rounds[-1]), file=sys.stderr)
            finally:
                stop_processes(list(reversed(served)), timeout_s=10)
        summary = summarise(rounds)
        summary["placement"] = {
            k: placement[k] for k in ("placement", "service_cpus", "other_cpus", "note")
        } | {"worker_cpus": args.worker_cpus}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        if args.details:
            ratios = round_ratios(rounds)
            details = {
                "loadgen": {"saturation": tool, "latency": "python"},
                "ratio_canary_rps_rounds": [round(x, 4) for x in ratios],
                "ratio_canary_rps_interval_90": median_interval(ratios),
                "cpu_us_per_request": {
                    phase: {
                        v: round(median(r[f"{v}_cpu_us_per_request_{phase}"] for r in rounds), 1)
                        for v in VARIANTS
                    }
                    for phase in ("saturation", "latency")
                },
                "worker_busy_saturation": {
                    v: round(median(r[f"{v}_worker_busy_saturation"] for r in rounds), 3)
                    for v in VARIANTS
                },
                "placement": placement,
                "loadavg_1m": [r["loadavg_1m_before"] for r in rounds],
                "rounds": rounds,
                "settings": {k: str(v) for k, v in vars(args).items()},
                "code": code,
                "cpus": os.cpu_count(),
            }
            args.details.parent.mkdir(parents=True, exist_ok=True)
            args.details.write_text(json.dumps(details, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    finally:
        clean_up(handles, root, keep=args.keep)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--loadgen-worker":
        _loadgen_main(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
