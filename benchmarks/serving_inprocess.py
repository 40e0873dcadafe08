"""What modelcanary costs per request, measured inside the serving process: CPU time only.

    python benchmarks/serving_inprocess.py --json out/serving_inprocess.json

``serving_overhead.py`` measures what a user sees over HTTP; its figures move by several
percent between rounds, so a change worth 10 us a request (1%) cannot be seen there. This
benchmark measures the same two services without HTTP, load generator or network: each
variant's BentoML ASGI app (``benchmarks/plain_service.py`` for ``plain``, modelcanary with
a 10% canary and Kafka logging for ``canary``) runs in a child process of its own, pinned
to one CPU (the broker and MLflow run on the others), and is called directly with
``/predict`` requests, one after another. The children take turns in blocks of
``--block`` requests (a b b a a b ...), so that drift of the machine hits both alike;
the child whose turn it is not is stopped (``SIGSTOP``), so that its background work
does not evict the other's caches. Each block's CPU time is read from the child itself:
``thread`` is the request thread alone, ``process`` adds its background threads (the
Kafka sender, librdkafka, the MLflow poll). uvicorn's HTTP parsing, the same in both, is
not included, so the CPU per request is ~15% lower than ``serving_overhead.py``'s.

Why pairs of duels: two processes of the *same* code differ by 5-15 us a request, in
either direction, depending on which was started first and on their memory layout. So
each duel is run twice, once with each variant started first (``--pairs`` such pairs),
and the added cost is the mean over all duels of the median block difference: the
start-order effect cancels out and is reported as ``order_bias_us``. Both children of a
pair get the same string-hash seed (``PYTHONHASHSEED``: the pair's number, so each pair
has another): with addresses fixed, the seed alone moved the canary's added cost by ~20
us a request (it changes every string's hash, hence how dicts and sets are laid out), so
several pairs are needed for a figure that is not one seed's. ``--fixed-addresses`` also
turns address-space randomisation off (``setarch -R``) for the children: two children of
the same code then differed by -5 to 0 us over three duels, against -12 to -6 with
randomisation (seed fixed) and -6 to +14 with neither fixed. Use it to compare two
versions of the code; the absolute figures are then those of one address layout (here
the canary's added cost came out 79 and 85 us with it, 60 without).

JSON keys: ``plain_us`` and ``canary_us`` (median process CPU per request),
``added_us`` (canary minus plain, start order cancelled), ``added_thread_us`` (the same,
request thread only), ``ratio_cpu`` (plain / canary: the throughput ratio a CPU-bound
server would get), ``order_bias_us``, ``duels`` (the figures of each duel),
``fixed_addresses`` (whether the children ran without address randomisation), ``cpus``
and ``worker_cpus`` (the options below).

Several cores (``--cpus all``): the children may run on every CPU, as a worker on a
serving host does, where the request thread and the background threads need not share a
core. With ``--worker-cpus`` the children pin themselves as ``MODELCANARY_WORKER_CPUS``
makes a serving worker do (``--cpus all --worker-cpus 1``: both on CPU 1, with all their
threads), which shows what the GIL's hand-over between cores costs the canary.

Compare two versions of the code by running it on each: the broker and MLflow are the
same kind, and the figures are per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import mean, median
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

SERVICES = {
    "plain": "benchmarks.plain_service:PlainService",
    "canary": "serving.service:ModelcanaryService",
}
WARMUP_REQUESTS = 300
STARTUP_TIMEOUT_S = 300.0


# -- the child: one service, driven in-process --------------------------------------
async def call_predict(app: Any, body: bytes) -> int:
    """One ``POST /predict`` through the ASGI app; returns the status code."""
    return (await call_predict_answer(app, body))[0]


async def call_predict_answer(app: Any, body: bytes) -> tuple[int, bytes]:
    """One ``POST /predict`` through the ASGI app; returns the status code and the body."""
    status = 0
    answer: list[bytes] = []
    delivered = False
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 3000),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:3000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            answer.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(answer)


async def start_lifespan(app: Any) -> None:
    """Run the app's ASGI lifespan startup (BentoML creates the service instance there)."""
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup") and not outcome.done():
            outcome.set_result(message)

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(lifespan, messages.get, send))
    message = await outcome
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"service failed to start: {message.get('message')}")
    _LIFESPANS.append(task)  # keep a reference: the task must live as long as the app


_LIFESPANS: list[asyncio.Future[Any]] = []


def load_app(variant: str, spec: dict[str, Any]) -> Any:
    """The variant's BentoML ASGI app, as worker 1 of ``bentoml serve`` would build it."""
    os.environ.update(spec["env"][variant])
    os.chdir(REPO_ROOT)
    from _bentoml_impl.loader import load
    from bentoml._internal.context import server_context

    service = load(SERVICES[variant], standalone_load=True)
    server_context.service_type = "entry_service"
    server_context.service_name = service.name
    server_context.worker_index = 1
    return service.to_asgi(is_main=True)


def child_main(variant: str, spec_path: Path, block: int) -> None:
    """Load one service; on each line of stdin run ``block`` requests, print their CPU."""
    spec = json.loads(spec_path.read_text())
    app = load_app(variant, spec)
    body = json.dumps({"features": spec["row"]}).encode()

    async def serve() -> None:
        await start_lifespan(app)
        for _ in range(WARMUP_REQUESTS):
            status = await call_predict(app, body)
        if status != 200:
            raise RuntimeError(f"{variant}: /predict answered {status}")
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            thread0, process0 = time.thread_time(), time.process_time()
            for _ in range(block):
                await call_predict(app, body)
            thread_us = (time.thread_time() - thread0) / block * 1e6
            process_us = (time.process_time() - process0) / block * 1e6
            print(json.dumps([thread_us, process_us]), flush=True)
            await asyncio.sleep(0.02)  # the background threads' turn, as between bursts

    asyncio.run(serve())


# -- the parent: backends, duels, summary ---------------------------------------------
def quiet_environment() -> None:
    """No telemetry, no git probing in the children (unless the caller set otherwise)."""
    for name, value in {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",
        "BENTOML_DO_NOT_TRACK": "true",
    }.items():
        os.environ.setdefault(name, value)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """The benchmark's JSON, to ``path`` and to stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def fixed_addresses_prefix() -> list[str]:
    """``setarch ARCH -R`` (no address-space randomisation) if it works here, else []."""
    setarch = shutil.which("setarch")
    if setarch is None:
        return []
    prefix = [setarch, platform.machine(), "-R"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    return prefix if probe.returncode == 0 else []


def duel(
    first: str, second: str, spec: Path, args: argparse.Namespace, layout: tuple[list[str], int]
) -> dict[str, Any]:
    """Start ``first`` then ``second``; alternate blocks; per-variant (thread, process) us.

    ``layout``: the command prefix and hash seed both children get (see the docstring).
    """
    from benchmarks.serving_overhead import paused

    prefix, seed = layout
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    children: dict[str, subprocess.Popen[str]] = {}
    try:
        for variant in (first, second):
            children[variant] = subprocess.Popen(
                [*prefix, sys.executable, __file__, "--child", variant, str(spec), str(args.block)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            _wait_ready(variant, children[variant])
        blocks: dict[str, list[list[float]]] = {first: [], second: []}
        for index in range(args.blocks):
            order = (first, second) if index % 2 == 0 else (second, first)
            for variant in order:
                child = children[variant]
                assert child.stdin is not None and child.stdout is not None
                # the other child stopped meanwhile: its background work (an idle canary
                # ~4.5 ms of CPU a second) no longer evicts this one's caches
                with paused([c.pid for v, c in children.items() if v != variant]):
                    child.stdin.write("go\n")
                    child.stdin.flush()
                    blocks[variant].append(json.loads(child.stdout.readline()))
    finally:
        for child in children.values():
            child.kill()
            child.wait()
    added = [
        [c[i] - p[i] for i in (0, 1)]
        for p, c in zip(blocks["plain"], blocks["canary"], strict=True)
    ]
    return {
        "started_first": first,
        "hash_seed": seed,
        "plain_us": round(median(b[1] for b in blocks["plain"]), 1),
        "canary_us": round(median(b[1] for b in blocks["canary"]), 1),
        "added_us": round(median(a[1] for a in added), 1),
        "added_thread_us": round(median(a[0] for a in added), 1),
    }


def _wait_ready(variant: str, child: subprocess.Popen[str]) -> None:
    """Until the child says it is ready; a child that hangs is killed after the timeout."""
    assert child.stdout is not None
    watchdog = threading.Timer(STARTUP_TIMEOUT_S, child.kill)
    watchdog.start()
    try:
        for line in child.stdout:
            if line.strip() == "ready":
                return
    finally:
        watchdog.cancel()
    raise RuntimeError(
        f"the {variant} service did not start within {STARTUP_TIMEOUT_S:.0f} s "
        f"(run `python {__file__} --child {variant} SPEC 500` to see its output)"
    )


def summarise(duels: list[dict[str, Any]]) -> dict[str, Any]:
    """Start order cancelled: each order is half of the duels, so the mean balances it."""
    plain_first = [d["added_us"] for d in duels if d["started_first"] == "plain"]
    canary_first = [d["added_us"] for d in duels if d["started_first"] == "canary"]
    plain_us = median(d["plain_us"] for d in duels)
    canary_us = median(d["canary_us"] for d in duels)
    return {
        "plain_us": plain_us,
        "canary_us": canary_us,
        "added_us": round(mean(d["added_us"] for d in duels), 1),
        "added_thread_us": round(mean(d["added_thread_us"] for d in duels), 1),
        "ratio_cpu": round(plain_us / canary_us, 3),
        "order_bias_us": round((mean(plain_first) - mean(canary_first)) / 2, 1),
        "duels": duels,
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.serving_overhead import worker_cpus_option

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write the result here")
    parser.add_argument("--pairs", type=int, default=2, help="duels with each start order")
    parser.add_argument("--blocks", type=int, default=30, help="blocks per variant and duel")
    parser.add_argument("--block", type=int, default=500, help="requests per block")
    parser.add_argument(
        "--cpus",
        choices=("one", "all"),
        default="one",
        help="one: the children run on the last CPU, broker and MLflow on the others; "
        "all: the children may run on every CPU (a serving host with several cores)",
    )
    parser.add_argument(
        "--worker-cpus",
        default="off",
        type=worker_cpus_option,
        help="MODELCANARY_WORKER_CPUS of both children (off, dedicated, auto or a CPU list, "
        "e.g. the last CPU with --cpus all: each child pins all its threads there as it "
        "starts)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--fixed-addresses",
        action="store_true",
        help="no address-space randomisation in the children (setarch -R): less spread "
        "between duels, for comparing two versions of the code",
    )
    args = parser.parse_args(argv)
    if min(args.pairs, args.blocks, args.block) < 1:
        parser.error("--pairs, --blocks and --block must be at least 1")
    quiet_environment()
    from benchmarks.serving_overhead import clean_up, start_backends
    from modelcanary.launch import component_env

    cpus = sorted(os.sched_getaffinity(0))
    root = Path(tempfile.mkdtemp(prefix="modelcanary-inprocess-"))
    handles: list[Any] = []
    if len(cpus) >= 2:  # the broker and MLflow off the services' CPU, as in production
        os.sched_setaffinity(0, cpus[:-1])
    try:
        base, handles, row = start_backends(root)
        spec = root / "spec.json"
        base = base.with_overrides(worker_cpus=args.worker_cpus)
        env = {v: component_env(base.with_overrides(model_name=f"bench-{v}")) for v in SERVICES}
        spec.write_text(json.dumps({"env": env, "row": row}))
        # the services' CPU(s): the children inherit them
        os.sched_setaffinity(0, cpus[-1:] if args.cpus == "one" else cpus)
        prefix = fixed_addresses_prefix() if args.fixed_addresses else []
        if args.fixed_addresses and not prefix:
            print("setarch -R does not work here: addresses stay randomised", file=sys.stderr)
        duels: list[dict[str, Any]] = []
        for index in range(args.pairs):
            for first, second in (("plain", "canary"), ("canary", "plain")):
                duels.append(duel(first, second, spec, args, (prefix, index + 1)))
                print(f"pair {index + 1}/{args.pairs}: {json.dumps(duels[-1])}", file=sys.stderr)
        os.sched_setaffinity(0, cpus)
        summary = {
            **summarise(duels),
            "fixed_addresses": bool(prefix),
            "cpus": args.cpus,
            "worker_cpus": args.worker_cpus,
        }
        write_summary(args.json, summary)
    finally:
        clean_up(handles, root, keep=args.keep)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child_main(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
