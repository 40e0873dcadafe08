"""Process plumbing for the embedded services: ports, detached children, readiness, stopping.

Nothing here knows about Kafka or MLflow. A started child is identified by a
:class:`ProcessHandle` — its pid *and* its creation time — so that a pid recorded
in a state file and later reused by the kernel for an unrelated process is seen as
stale instead of being reported as running (or, worse, killed).

Children are started in a new session (``start_new_session=True``): they outlive
the command that started them, and they lead their own process group, which is
what :func:`stop_process` signals so that grandchildren (the uvicorn worker of
``mlflow server``) go down with their parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from modelcanary.errors import InfraError, PortInUseError

LOCALHOST = "127.0.0.1"
POLL_INTERVAL_S = 0.1
# Creation times read twice for one process agree exactly; the slack only absorbs
# float rounding through JSON.
_CREATE_TIME_TOLERANCE_S = 0.01


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether a server could listen on ``host:port`` now.

    ``SO_REUSEADDR`` is set, as servers set it, so that connections of a previous
    server lingering in TIME_WAIT do not count as "taken".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not tcp_answers(port, host)


def ensure_port_free(port: int, *, host: str = LOCALHOST, fix: str = "stop it") -> None:
    """Raise :class:`PortInUseError` saying ``fix`` when ``host:port`` is taken."""
    if not port_is_free(port, host):
        raise PortInUseError(f"port {port} is taken by another process: {fix}")


def tcp_answers(port: int, host: str = LOCALHOST, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``GET url`` answers with a 2xx status."""
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.is_success


@dataclass(frozen=True)
class ProcessHandle:
    """A process we started: pid plus creation time, which together survive pid reuse."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessHandle:
        """Handle of the live process ``pid``."""
        try:
            return cls(pid=pid, create_time=psutil.Process(pid).create_time())
        except psutil.Error as exc:
            raise InfraError(f"process {pid} vanished right after it was started") from exc

    def is_running(self) -> bool:
        """True if this very process is alive (not a zombie, not a reused pid)."""
        proc = self.psutil_process()
        if proc is None:
            return False
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def psutil_process(self) -> psutil.Process | None:
        """This very process (zombies included), or None if it is gone or its pid reused."""
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) <= _CREATE_TIME_TOLERANCE_S
        except psutil.Error:
            return None
        return proc if same else None

    def to_json(self) -> dict[str, float | int]:
        return {"pid": self.pid, "create_time": self.create_time}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProcessHandle:
        pid, create_time = data.get("pid"), data.get("create_time")
        if not isinstance(pid, int) or not isinstance(create_time, int | float):
            raise ValueError(f"not a process record: {dict(data)!r}")
        return cls(pid=pid, create_time=float(create_time))


def start_detached(
    cmd: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> ProcessHandle:
    """Start ``cmd`` in its own session with stdout and stderr appended to ``log_path``.

    The child keeps running after the calling process exits and leads its own
    process group (its pgid is its pid).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"--- {stamp} modelcanary starts: {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise InfraError(f"cannot start {cmd[0]}: {exc}") from exc
    return ProcessHandle.of(proc.pid)


def log_tail(log_path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def wait_until_ready(
    check: Callable[[], bool],
    *,
    what: str,
    process: ProcessHandle,
    log_path: Path,
    timeout_s: float,
) -> None:
    """Poll ``check`` until it is true; fail fast if ``process`` dies first.

    Raises :class:`InfraError` naming the log file (and quoting its last lines when
    the process exited) if the process dies or ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if not process.is_running():
            raise InfraError(
                f"{what} exited during startup; last lines of {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() >= deadline:
            raise InfraError(f"{what} did not answer within {timeout_s:.0f} s; see {log_path}")
        time.sleep(POLL_INTERVAL_S)


def _group_members(pgid: int, not_before: float) -> list[psutil.Process]:
    """Live processes in process group ``pgid`` created at or after ``not_before``."""
    members = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if (
                os.getpgid(proc.pid) == pgid
                and proc.info["create_time"] >= not_before - _CREATE_TIME_TOLERANCE_S
            ):
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def process_tree(handle: ProcessHandle) -> list[psutil.Process]:
    """The live process of ``handle``, its descendants and the rest of its process group.

    If the leader is gone (killed with SIGKILL, say), its orphaned children still
    carry its pid as their process group id and are returned. If the pid now
    belongs to another process, nothing is returned: our group cannot still exist,
    because the kernel does not reuse a pid that is still some group's id.
    """
    leader = handle.psutil_process()
    if leader is None:
        with contextlib.suppress(psutil.Error):
            psutil.Process(handle.pid)
            return []  # the pid was reused by an unrelated process
    tree: dict[int, psutil.Process] = {}
    if leader is not None:
        tree[leader.pid] = leader
        with contextlib.suppress(psutil.Error):
            tree.update({p.pid: p for p in leader.children(recursive=True)})
    tree.update({p.pid: p for p in _group_members(handle.pid, handle.create_time)})
    return [p for p in tree.values() if _not_zombie(p)]


def _not_zombie(proc: psutil.Process) -> bool:
    # A zombie is already dead; one that is not our child may wait long for its
    # parent to reap it, and waiting for it would only time out.
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(procs: Sequence[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _finished(proc: psutil.Process) -> bool:
    try:
        proc.wait(timeout=0)  # reaps it if it is our child
        return True
    except psutil.TimeoutExpired:
        # Dead but not reaped by its parent (often init, for our grandchildren).
        return not _not_zombie(proc)
    except psutil.Error:
        return True


def _wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process has exited; return those still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while True:
        alive = [p for p in alive if not _finished(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def stop_processes(handles: Sequence[ProcessHandle], *, timeout_s: float = 10.0) -> list[bool]:
    """Stop several processes and their whole trees at once: SIGTERM, then SIGKILL.

    All trees get SIGTERM together and share one ``timeout_s`` before SIGKILL, so
    stopping two services takes as long as the slower one. Returns, per handle,
    whether anything of it was still running. Waiting reaps the processes that are
    our own children, so none is left as a zombie; a zombie whose parent is another
    process counts as stopped.
    """
    trees = [process_tree(handle) for handle in handles]
    procs = list({p.pid: p for tree in trees for p in tree}.values())
    if procs:
        _signal_all(procs, signal.SIGTERM)
        alive = _wait_gone(procs, timeout_s)
        if alive:
            _signal_all(alive, signal.SIGKILL)
            alive = _wait_gone(alive, 5.0)
        if alive:
            pids = ", ".join(str(p.pid) for p in alive)
            raise InfraError(f"processes {pids} survived SIGKILL; stop them by hand")
    return [bool(tree) for tree in trees]


def stop_process(handle: ProcessHandle, *, timeout_s: float = 10.0) -> bool:
    """Stop one process and its tree (see :func:`stop_processes`); whether it was running."""
    return stop_processes([handle], timeout_s=timeout_s)[0]
