"""Pinning a serving worker to one CPU (``MODELCANARY_WORKER_CPUS``).

A worker answers requests on one thread, but also runs Python threads in the
background: the Kafka event sender, the decision watcher, the MLflow reconcile loop. They
wake a few times a second and then need the GIL. CPython 3.11 hands the GIL over badly
between cores: while the request thread is busy, a waiter on another core is woken at
each of its brief releases of the GIL, finds it taken again and waits anew, and the
request thread pays for those hand-overs (futex calls, cache lines moving between cores).
On one core the hand-over is an ordinary thread switch. Measured in process on the
2-core development machine (``benchmarks/serving_inprocess.py --cpus all``), the canary
cost 191 µs a request more than plain with both free to run on both CPUs, and 62 µs
more with both pinned to one (README, "Serving overhead", on several cores).

``dedicated``, the default, pins only a replica whose CPUs are its own, one per worker:
when the process may use exactly as many CPUs as the replica has workers (a container
or pod given a cpuset of that size), worker *i* goes to the *i*-th of them. Elsewhere it
pins nothing: a pinned worker cannot move away from a core that something else keeps
busy, and on a host whose CPUs outnumber the workers nothing says which cores are free.
``auto`` pins in any case, giving the workers of a replica the CPUs it may use in turn
(worker 1 the first, worker 2 the second, ...); a CPU list such as ``0-3,8`` does the
same over those CPUs, and tells replicas sharing a host apart. ``off`` never pins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from modelcanary.errors import ConfigError

log = logging.getLogger(__name__)

OFF = "off"
AUTO = "auto"
DEDICATED = "dedicated"
_VARIABLE = "MODELCANARY_WORKER_CPUS"
#: Linux numbers CPUs below this (CONFIG_NR_CPUS is at most 8192).
MAX_CPUS = 8192


def parse_worker_cpus(spec: str) -> list[int] | None:
    """The CPUs ``spec`` lists: ``off`` and ``dedicated`` → None (none: no CPU list);
    ``auto`` → [] (all); ``0-3,8`` → [0, 1, 2, 3, 8] (in the order written).

    Raises :class:`ConfigError` naming the variable and the expected form.
    """
    text = spec.strip().lower()
    if text in ("", OFF, DEDICATED):
        return None
    if text == AUTO:
        return []
    cpus: dict[int, None] = {}  # ordered, without repeats
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ConfigError(
                f"{_VARIABLE}: {spec!r} is not off, dedicated, auto or a CPU list such as 0-3,8"
            ) from None
        if low < 0 or high < low:
            raise ConfigError(f"{_VARIABLE}: {part.strip()!r} is not a CPU range (low-high)")
        if high >= MAX_CPUS:
            raise ConfigError(f"{_VARIABLE}: CPU {high} does not exist (at most {MAX_CPUS - 1})")
        cpus.update(dict.fromkeys(range(low, high + 1)))
    return list(cpus)


def choose_cpu(
    spec: str, worker_index: int, allowed: Iterable[int], workers: int = 1
) -> int | None:
    """The CPU for worker ``worker_index`` (1-based) of a replica of ``workers`` workers,
    or None when it is not to be pinned.

    ``allowed`` is the set of CPUs the process may use; a listed CPU outside it is a
    :class:`ConfigError` (the worker could not run there).
    """
    if spec.strip().lower() == DEDICATED:
        usable = sorted(allowed)
        if len(usable) != workers or not 1 <= worker_index <= workers:
            return None
        return usable[worker_index - 1]
    cpus = parse_worker_cpus(spec)
    if cpus is None:
        return None
    usable = sorted(allowed)
    if not usable:
        raise ConfigError(f"{_VARIABLE}: this process may not run on any CPU")
    if not cpus:
        cpus = usable
    outside = [cpu for cpu in cpus if cpu not in usable]
    if outside:
        raise ConfigError(
            f"{_VARIABLE}: CPU(s) {outside} are not available to this process "
            f"(it may use {_ranges(usable)}); list only those, or set auto"
        )
    return cpus[(max(worker_index, 1) - 1) % len(cpus)]


def check_worker_cpus(spec: str) -> None:
    """Raise :class:`ConfigError` now if a worker could not be pinned as ``spec`` says.

    For the command that starts ``bentoml serve``: a worker that fails as it starts only
    says so in its log.
    """
    if parse_worker_cpus(spec) is not None and hasattr(os, "sched_getaffinity"):
        choose_cpu(spec, 1, os.sched_getaffinity(0))


def pin_worker(spec: str, worker_index: int, workers: int = 1) -> int | None:
    """Pin every thread of this process to the CPU :func:`choose_cpu` picks; returns it
    (None if it pinned nothing).

    Threads started later inherit the CPU from the thread that starts them. Where the
    platform cannot pin (not Linux) it returns None, with a warning if pinning was asked
    for explicitly (``auto`` or a list).
    """
    if not hasattr(os, "sched_setaffinity"):
        if parse_worker_cpus(spec) is not None:  # auto or a list: asked for explicitly
            log.warning(
                "%s=%s is ignored: this platform cannot pin threads to CPUs", _VARIABLE, spec
            )
        return None
    cpu = choose_cpu(spec, worker_index, os.sched_getaffinity(0), workers)
    if cpu is None:
        return None
    threads = _thread_ids()
    for thread_id in threads:
        try:
            os.sched_setaffinity(thread_id, {cpu})
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    log.info("worker %d pinned to CPU %d (%s=%s)", worker_index, cpu, _VARIABLE, spec)
    return cpu


def _thread_ids() -> list[int]:
    """Linux thread ids of this process; the calling thread alone if /proc is missing."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _ranges(cpus: list[int]) -> str:
    """[0, 1, 2, 5] → '0-2,5'."""
    parts: list[str] = []
    start = previous = cpus[0]
    for cpu in [*cpus[1:], None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(parts)
