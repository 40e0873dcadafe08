"""Stop a serving worker whose ``bentoml serve`` is gone.

``bentoml serve`` starts each worker in a session of its own. If the ``bentoml serve``
process dies without stopping them (SIGKILL, the OOM killer), its workers are
reparented and go on answering on the listening socket they inherited, outside any
supervision and invisible to whatever restarts the service: a new ``bentoml serve`` on
the same port then shares it with them. :class:`ParentWatch` checks once a second
whether this process's parent has changed and, if so, sends the process ``SIGTERM``:
the worker then shuts down as on any stop (the events it holds are delivered or
spooled to disk).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("modelcanary.serving")


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class ParentWatch:
    """Calls ``on_orphaned`` (default: SIGTERM to this process) once the parent is gone."""

    def __init__(
        self, interval_s: float = 1.0, on_orphaned: Callable[[], None] = _terminate_self
    ) -> None:
        self.parent = os.getppid()
        self.interval_s = interval_s
        self._on_orphaned = on_orphaned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parent-watch", daemon=True)

    def start(self) -> ParentWatch:
        # Started by init already (a container's PID 1 runs us, say): nothing to watch.
        if self.parent != 1:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if os.getppid() != self.parent:
                log.error(
                    "the parent process (pid %d, bentoml serve) is gone: this worker stops",
                    self.parent,
                )
                self._on_orphaned()
                return
