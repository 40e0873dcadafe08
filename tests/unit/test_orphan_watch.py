"""The parent watch of a serving worker (``modelcanary/orphan_watch.py``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from modelcanary.orphan_watch import ParentWatch, is_bentoml_serve, read_cmdline

WORKER = ["/venv/bin/python", "-m", "_bentoml_impl.worker.service", "serving.service:Svc"]
SERVE = ["/venv/bin/python", "-m", "bentoml", "serve", "serving.service:Svc", "--port", "3000"]


def _cmdlines(parent: list[str]) -> Callable[[int | str], list[str]]:
    """This process is a BentoML worker, its parent runs ``parent``."""
    return lambda pid: WORKER if pid == "self" else parent


def test_bentoml_serve_is_recognised_however_it_was_started() -> None:
    assert is_bentoml_serve(SERVE)
    assert is_bentoml_serve(["/venv/bin/bentoml", "serve", "serving.service:Svc"])
    assert not is_bentoml_serve(["/sbin/init"])
    assert not is_bentoml_serve(["/venv/bin/python", "-m", "bentoml", "build"])
    assert not is_bentoml_serve([])


def test_this_process_command_line_is_read_from_proc() -> None:
    assert read_cmdline("self") == read_cmdline(os.getpid()) != []
    assert read_cmdline(2**22 + 7) == []  # no such process


def test_a_worker_whose_bentoml_serve_died_while_it_started_stops_at_once() -> None:
    orphaned = threading.Event()
    ParentWatch(0.05, orphaned.set, cmdline=_cmdlines(["/sbin/init"])).start()
    assert orphaned.is_set()


def test_a_worker_under_a_live_bentoml_serve_is_left_alone() -> None:
    orphaned = threading.Event()
    watch = ParentWatch(0.05, orphaned.set, cmdline=_cmdlines(SERVE)).start()
    try:
        assert not orphaned.wait(0.3)
    finally:
        watch.stop()


def test_a_worker_whose_parent_changes_stops() -> None:
    orphaned = threading.Event()
    watch = ParentWatch(0.05, orphaned.set, cmdline=_cmdlines(SERVE))
    watch.parent = os.getppid() + 1  # as if the parent had been replaced since
    watch.start()
    try:
        assert orphaned.wait(2.0)
    finally:
        watch.stop()


def test_a_process_that_is_not_a_bentoml_worker_is_not_watched() -> None:
    orphaned = threading.Event()
    ParentWatch(0.05, orphaned.set, cmdline=lambda pid: ["/sbin/init"]).start()
    assert not orphaned.wait(0.3)
