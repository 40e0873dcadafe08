"""Stop a serving worker whose ``bentoml serve`` is gone.

``bentoml serve`` starts each worker in a session of its own. If the ``bentoml serve``
process dies without stopping them (SIGKILL, the OOM killer), its workers are
reparented and go on answering on the listening socket they inherited, outside any
supervision and invisible to whatever restarts the service: a new ``bentoml serve`` on
the same port then shares it with them. :class:`ParentWatch` checks once a second
whether this process's parent has changed and, if so, sends the process ``SIGTERM``:
the worker then shuts down as on any stop (the events it holds are delivered or
spooled to disk).

A worker can also lose its ``bentoml serve`` while it is still starting (loading the
model takes seconds): its parent is then already init, or a subreaper, when the watch
starts. So the watch first checks that the parent is a ``bentoml serve`` process at all
(from ``/proc``), and stops the worker at once if not. Processes that are not BentoML
workers (tests, in-process harnesses) and systems without ``/proc`` are not watched.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("modelcanary.serving")

#: What a BentoML worker's command line contains (``python -m _bentoml_impl.worker...``).
WORKER_MODULE = "_bentoml_impl.worker"


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def read_cmdline(pid: int | str) -> list[str]:
    """The command line of process ``pid`` (``"self"``: this one); [] if unknown."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_bentoml_worker(args: Sequence[str]) -> bool:
    return any(WORKER_MODULE in part for part in args)


def is_bentoml_serve(args: Sequence[str]) -> bool:
    """``bentoml serve ...`` or ``python -m bentoml serve ...``."""
    return "serve" in args and any(os.path.basename(part) == "bentoml" for part in args)


class ParentWatch:
    """Calls ``on_orphaned`` (default: SIGTERM to this process) once the parent is gone."""

    def __init__(
        self,
        interval_s: float = 1.0,
        on_orphaned: Callable[[], None] = _terminate_self,
        *,
        cmdline: Callable[[int | str], list[str]] = read_cmdline,
    ) -> None:
        self.parent = os.getppid()
        self.interval_s = interval_s
        self._on_orphaned = on_orphaned
        self._cmdline = cmdline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parent-watch", daemon=True)

    def start(self) -> ParentWatch:
        if not is_bentoml_worker(self._cmdline("self")):
            return self  # not started by `bentoml serve`: nothing to watch
        if not is_bentoml_serve(self._cmdline(self.parent)):  # it died while we started
            self._orphaned(f"this worker's parent is now pid {self.parent}, not bentoml serve")
            return self
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if os.getppid() != self.parent:
                self._orphaned(f"the parent process (pid {self.parent}, bentoml serve) is gone")
                return

    def _orphaned(self, why: str) -> None:
        log.error("%s: this worker stops", why)
        self._on_orphaned()
