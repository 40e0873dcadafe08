"""What modelcanary costs per request, counted in instructions: exact where time is noisy.

    python benchmarks/serving_instructions.py --json out/serving_instructions.json [--cache-sim]

``serving_inprocess.py`` measures CPU time, which on a shared host moves by 10-30% from one
process to the next; a change worth 10 us a request (1%) then needs many duels. This
benchmark runs the same in-process services (each variant's BentoML ASGI app, called
directly with ``/predict`` requests) under valgrind's callgrind, which counts the
instructions each thread executes. The count does not depend on what else the machine
does, so two runs of the same code agree to a fraction of a percent and a change of 1%
shows in one run. ``--cache-sim`` adds callgrind's cache simulation (first-level caches
and a last level of this machine's per-core L2 size): misses are what instruction counts
leave out when a larger footprint of code and data costs time without costing
instructions.

How: each variant's child process starts under ``valgrind --tool=callgrind
--instr-atstart=no --separate-threads=yes``, loads its service, answers ``--warmup``
requests, and only then is instrumentation switched on (``callgrind_control -i on``) for
``--requests`` requests, each with its own request id of the same length; the canary's
ids are picked so that every tenth request goes to its challenger (its routing salt is
new in every run: random ids would send it 5-11% of the counted requests). The
counts are split between the request thread (the event loop's, valgrind's thread 1) and
all other threads (Kafka sender, librdkafka, challenger pool, MLflow poll).

Valgrind runs the code about 50 times slower, so what is timed in the canary is scaled
in the child, else the counts would measure the slowdown: the challenger's inline budget
and timeout (a 0.5 ms call takes ~30 ms here, past the 5 ms budget: it would go to the
pool), the sender's linger (at 200 ms, rounds of 3 events instead of ~150; the sender
runs one round after the window, flushed before instrumentation is switched off) and the
MLflow poll (once a second, i.e. 50 times as often per request); the decision watcher,
which only polls Kafka on the clock while no decision comes, is stopped. What is still
driven by the clock (librdkafka's idle timers) is overcounted per request in
``other_threads``. The request thread's instruction counts are exact; its simulated
misses are not quite: callgrind simulates one cache for all threads, so the other
threads' work evicts the request thread's lines too, and clock-driven work does so 50
times too often (a plain service with the canary's idle machinery started beside it, the
MLflow poll not scaled, had +0.7 k misses a request on an identical request path).

JSON keys, per variant (``plain``, ``canary``): ``requests``, ``challenger_answers``,
``per_request`` (``request_thread``, ``other_threads``, ``all``: each a dict of
callgrind's events, ``Ir`` instructions, and with ``--cache-sim`` ``I1mr``, ``D1mr``,
``D1mw``, ``ILmr``, ``DLmr``, ``DLmw``, ...). Then ``added`` (canary minus plain, per
request, same layout) and ``ratio_instructions`` (plain / canary, all threads), and
``fixed_addresses``.

Where the objects lie in memory still moves the counts: two runs of the same code differ
by up to ~30 k instructions a request on the canary's request thread (pymalloc's check
of which arena a freed block belongs to, for one, takes more or fewer comparisons by
address: ``_PyObject_Free`` alone moved by 8 k). ``--fixed-addresses`` runs the children
without address randomisation (``setarch -R``): two runs of the same code then agreed
within 0.2-7 k (three pairs), which suits comparing two versions of the code; judge a
gain of a few k by the functions it should touch (``callgrind_annotate`` on the
``--keep``'t files), not by the total of one pair.

Needs valgrind (Debian's ``valgrind`` package); 1-2 minutes for both variants with
``--requests 200`` (the children run in parallel).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.serving_inprocess import (  # noqa: E402
    SERVICES,
    call_predict_answer,
    fixed_addresses_prefix,
    load_app,
    quiet_environment,
    start_lifespan,
    write_summary,
)
from modelcanary.events import Arm  # noqa: E402

#: Valgrind's slowdown, roughly: what the child multiplies the canary's timings by.
SLOWDOWN = 60.0
#: This machine's per-core L2 is 1 MiB; first-level caches 32 KiB, 8-way, 64-byte lines.
CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,8,64"]
STARTUP_TIMEOUT_S = 1800.0


# -- the child: one service under callgrind -----------------------------------------
def slow_down_canary(scale: float) -> None:
    """Scale the canary's clock-driven behaviour by ``scale`` (see the module docstring)."""
    from serving import service

    serving = service._SERVING[0]
    router = serving.router
    router.challenger_timeout_s *= scale
    router.inline_wait_s *= scale
    router.reconcile_interval_s *= scale
    serving.publisher._linger_s = 3600.0  # one round after the window (see flush below)
    serving.watcher.stop()  # it only polls, on the clock, while no decision comes


async def answer(app: Any, body: bytes) -> bytes:
    """One ``POST /predict``; the answer's body (raises unless it is a 200)."""
    status, payload = await call_predict_answer(app, body)
    if status != 200:
        raise RuntimeError(f"/predict answered {status}: {payload[:200]!r}")
    return payload


def request_ids(count: int, route: Callable[[str], Arm] | None) -> list[str]:
    """``count`` request ids of one length; with ``route``, every 10th goes to the challenger.

    So a canary's challenger answers the same share of the counted requests in every run,
    whatever its rollout's routing salt: the ids are picked by the router's own table.
    """
    if route is None:
        return [f"bench-{i:06d}" for i in range(count)]
    wanted = [Arm.CHALLENGER if i % 10 == 9 else Arm.CHAMPION for i in range(count)]
    pools: dict[Arm, list[str]] = {Arm.CHAMPION: [], Arm.CHALLENGER: []}
    candidates = (f"bench-{i:06d}" for i in itertools.count())
    while any(len(pools[arm]) < wanted.count(arm) for arm in pools):
        candidate = next(candidates)
        pools[route(candidate)].append(candidate)
    taken = {arm: iter(ids) for arm, ids in pools.items()}
    return [next(taken[arm]) for arm in wanted]


def child_main(variant: str, spec_path: Path, warmup: int, requests: int) -> None:
    """Load one service, warm it up, then answer ``requests`` requests when told to."""
    spec = json.loads(spec_path.read_text())
    app = load_app(variant, spec)
    row = spec["row"]
    warm = json.dumps({"features": row}).encode()

    async def serve() -> None:
        await start_lifespan(app)
        publisher = None
        route = None
        if variant != "plain":
            from serving import service

            if service._SERVING:
                slow_down_canary(SLOWDOWN)
                publisher = service._SERVING[0].publisher
                table = service._SERVING[0].router.snapshot.table
                if table.active:
                    route = lambda key: table.route(key).served_by  # noqa: E731
        bodies = [
            json.dumps({"features": row, "request_id": request_id}).encode()
            for request_id in request_ids(requests, route)
        ]
        for _ in range(warmup):
            await answer(app, warm)
        if publisher is not None:
            publisher.flush(600.0)
        gc.collect()  # every run's window starts from the same collector state
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        challenger = 0
        for body in bodies:
            challenger += b'"challenger"' in await answer(app, body)
        if publisher is not None:
            publisher.flush(600.0)  # the window's events encoded and sent, inside it
        print(json.dumps({"challenger_answers": challenger}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        os._exit(0)  # valgrind writes its counts as the process exits

    asyncio.run(serve())


# -- the parent -------------------------------------------------------------------------
def parse_callgrind(path: Path) -> dict[str, int]:
    """The event totals of one callgrind output file (``events:`` and ``summary:`` lines)."""
    names: list[str] = []
    totals: list[int] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            totals = [int(v) for v in line.split()[1:]]
    return dict(zip(names, totals, strict=False))


def thread_totals(out_dir: Path, variant: str) -> tuple[dict[str, int], dict[str, int]]:
    """(request thread, all other threads) totals of one variant's per-thread files."""
    request: dict[str, int] = {}
    others: dict[str, int] = {}
    pattern = re.compile(rf"^cg\.{re.escape(variant)}\.\d+-(\d+)$")
    for path in sorted(out_dir.iterdir()):
        match = pattern.match(path.name)
        if match is None:
            continue
        counts = parse_callgrind(path)
        target = request if int(match.group(1)) == 1 else others
        for name, value in counts.items():
            target[name] = target.get(name, 0) + value
    if not request:
        raise RuntimeError(f"no callgrind output for {variant} in {out_dir}")
    return request, others


def per_request(counts: dict[str, int], requests: int) -> dict[str, float]:
    return {name: round(value / requests, 1) for name, value in counts.items()}


def callgrind_control(option: str, pid: int) -> None:
    subprocess.run(
        ["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=600
    )


class Child:
    """One variant's process under callgrind, driven line by line."""

    def __init__(self, variant: str, spec: Path, out_dir: Path, args: argparse.Namespace) -> None:
        self.variant = variant
        command = [
            *args.prefix,
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            "--dump-instr=no",
            "--collect-jumps=no",
            f"--callgrind-out-file={out_dir}/cg.{variant}.%p",
            *(["--cache-sim=yes", *CACHES] if args.cache_sim else []),
            sys.executable,
            __file__,
            "--child",
            variant,
            str(spec),
            str(args.warmup),
            str(args.requests),
        ]
        self.log = (out_dir / f"{variant}.log").open("w")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "1"},
        )
        self.result: dict[str, Any] = {}
        self.error: BaseException | None = None

    def line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the {self.variant} child ended early; see {self.log.name} (--keep keeps it)"
            )
        return line.strip()

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def run(self) -> None:
        try:
            while self.line() != "ready":
                pass
            pid = self.process.pid
            callgrind_control("--instr=on", pid)
            self.send("go")
            self.result = json.loads(self.line())
            callgrind_control("--instr=off", pid)
            self.send("exit")
            self.process.wait(timeout=600)
        except BaseException as exc:  # reported by the parent's thread
            self.error = exc
            self.process.kill()
        finally:
            self.log.close()


def run_children(spec: Path, out_dir: Path, args: argparse.Namespace) -> dict[str, dict]:
    children = [Child(v, spec, out_dir, args) for v in args.variants]
    threads = [threading.Thread(target=c.run) for c in children]
    watchdog = threading.Timer(STARTUP_TIMEOUT_S, lambda: [c.process.kill() for c in children])
    watchdog.start()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        watchdog.cancel()
    results: dict[str, dict] = {}
    for child in children:
        if child.error is not None:
            raise RuntimeError(f"{child.variant}: {child.error}") from child.error
        request, others = thread_totals(out_dir, child.variant)
        every = {k: request.get(k, 0) + others.get(k, 0) for k in request.keys() | others.keys()}
        results[child.variant] = {
            "requests": args.requests,
            **child.result,
            "per_request": {
                "request_thread": per_request(request, args.requests),
                "other_threads": per_request(others, args.requests),
                "all": per_request(every, args.requests),
            },
        }
    return results


def compare(results: dict[str, dict], base: str, other: str) -> dict[str, Any]:
    """``other`` minus ``base``, per request, and the instruction ratio base / other."""
    added = {
        part: {
            name: round(value - results[base]["per_request"][part].get(name, 0.0), 1)
            for name, value in counts.items()
        }
        for part, counts in results[other]["per_request"].items()
    }
    ratio = results[base]["per_request"]["all"]["Ir"] / results[other]["per_request"]["all"]["Ir"]
    return {"added": added, "ratio_instructions": round(ratio, 4)}


def variants_option(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in SERVICES]
    if unknown or len(names) != 2 or len(set(names)) != 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give two of {', '.join(SERVICES)} separated by a comma, e.g. plain,canary"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="write the result here")
    parser.add_argument("--requests", type=int, default=200, help="requests counted per variant")
    parser.add_argument("--warmup", type=int, default=200, help="requests before counting")
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="simulate the caches too (slower): misses per request",
    )
    parser.add_argument(
        "--variants",
        type=variants_option,
        default=["plain", "canary"],
        help="the base and the variant compared with it (default plain,canary)",
    )
    parser.add_argument(
        "--fixed-addresses",
        action="store_true",
        help="no address-space randomisation in the children (setarch -R): two runs of the "
        "same code then agree within a few k instructions a request instead of ~30 k, for "
        "comparing two versions of the code",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if min(args.requests, args.warmup) < 1:
        parser.error("--requests and --warmup must be at least 1")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed: `apt-get install valgrind`")
    quiet_environment()
    args.prefix = fixed_addresses_prefix() if args.fixed_addresses else []
    if args.fixed_addresses and not args.prefix:
        print("setarch -R does not work here: addresses stay randomised", file=sys.stderr)
    from benchmarks.serving_overhead import clean_up, start_backends
    from modelcanary.launch import component_env

    root = Path(tempfile.mkdtemp(prefix="modelcanary-instructions-"))
    handles: list[Any] = []
    try:
        base, handles, row = start_backends(root)
        env = {v: component_env(base.with_overrides(model_name=f"bench-{v}")) for v in SERVICES}
        spec = root / "spec.json"
        spec.write_text(json.dumps({"env": env, "row": row}))
        print(
            f"counting {args.requests} requests of {' and '.join(args.variants)} under "
            f"callgrind (about 10 minutes; logs in {root})",
            file=sys.stderr,
        )
        results = run_children(spec, root, args)
        summary = {
            **results,
            **compare(results, *args.variants),
            "cache_sim": args.cache_sim,
            "fixed_addresses": bool(args.prefix),
            "caches": CACHES if args.cache_sim else None,
        }
        write_summary(args.json, summary)
    finally:
        clean_up(handles, root, keep=args.keep)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child_main(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
