"""Process plumbing, against real (tiny Python) processes and real sockets."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from modelcanary.errors import InfraError, PortInUseError
from modelcanary.infra.child_env import QUIET_DEFAULTS, child_env
from modelcanary.infra.processes import (
    LOCALHOST,
    ProcessHandle,
    ensure_port_free,
    free_port,
    http_ok,
    log_tail,
    port_is_free,
    process_tree,
    start_detached,
    stop_process,
    stop_processes,
    tcp_answers,
    wait_until_ready,
)

SLEEP = "import time; time.sleep(60)"
# Prints the pid of a grandchild, then sleeps: a tree of two processes.
SPAWN_CHILD = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(p.pid, flush=True); time.sleep(60)"
)
IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ProcessHandle]]:
    """Handles to stop after the test, whatever happened."""
    handles: list[ProcessHandle] = []
    yield handles
    stop_processes(handles, timeout_s=1.0)


def _start(code: str, log: Path, started: list[ProcessHandle]) -> ProcessHandle:
    handle = start_detached([sys.executable, "-c", code], log_path=log, env=child_env())
    started.append(handle)
    return handle


def _wait_for_output(log: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [ln for ln in log_tail(log, 5).splitlines() if not ln.startswith("---")]
        if lines:
            return lines[-1]
        time.sleep(0.02)
    raise AssertionError(f"no output in {log}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- ports -----------------------------------------------------------------------------


def test_free_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.create_server((LOCALHOST, port)):
        assert tcp_answers(port)


def test_listening_port_is_taken_and_error_names_port_and_fix() -> None:
    with socket.create_server((LOCALHOST, 0)) as server:
        port = server.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(PortInUseError, match=rf"port {port} is taken.*set MY_PORT"):
            ensure_port_free(port, fix="stop it or set MY_PORT")
    assert port_is_free(port)
    ensure_port_free(port)


def test_bound_but_not_listening_port_is_taken() -> None:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        assert not port_is_free(sock.getsockname()[1])


def test_nothing_answers_on_a_free_port() -> None:
    port = free_port()
    assert not tcp_answers(port)
    assert not http_ok(f"http://{LOCALHOST}:{port}/health", timeout_s=0.5)


# --- starting and identifying processes -----------------------------------------------


def test_detached_child_logs_and_leads_its_own_session(
    tmp_path: Path, started: list[ProcessHandle]
) -> None:
    log = tmp_path / "logs" / "child.log"
    code = "print('hello from child', flush=True); import time; time.sleep(60)"
    handle = _start(code, log, started)
    assert _wait_for_output(log) == "hello from child"
    assert handle.is_running()
    assert os.getsid(handle.pid) == handle.pid
    assert os.getpgid(handle.pid) == handle.pid
    assert log.read_text().startswith("--- ")  # header naming the command


def test_reused_pid_is_not_running_and_is_never_signalled(
    tmp_path: Path, started: list[ProcessHandle]
) -> None:
    real = _start(SLEEP, tmp_path / "a.log", started)
    impostor = ProcessHandle(pid=real.pid, create_time=real.create_time - 100.0)
    assert not impostor.is_running()
    assert process_tree(impostor) == []
    assert stop_process(impostor, timeout_s=0.5) is False
    assert real.is_running()


def test_handle_json_round_trip_and_rejects_garbage() -> None:
    handle = ProcessHandle(pid=123, create_time=1_700_000_000.25)
    assert ProcessHandle.from_json(handle.to_json()) == handle
    with pytest.raises(ValueError):
        ProcessHandle.from_json({"pid": "123"})


def test_handle_of_a_missing_pid_raises() -> None:
    with pytest.raises(InfraError):
        ProcessHandle.of(2**22 + 12345)  # above Linux's default pid_max


def test_start_of_a_missing_binary_raises(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="cannot start"):
        start_detached([str(tmp_path / "nope")], log_path=tmp_path / "x.log", env={})


# --- stopping ------------------------------------------------------------------------


def test_stop_kills_the_whole_tree(tmp_path: Path, started: list[ProcessHandle]) -> None:
    log = tmp_path / "tree.log"
    handle = _start(SPAWN_CHILD, log, started)
    grandchild = int(_wait_for_output(log))
    assert {p.pid for p in process_tree(handle)} == {handle.pid, grandchild}
    assert stop_process(handle, timeout_s=5.0) is True
    assert _gone(handle.pid)
    assert _gone(grandchild)
    assert not handle.is_running()
    assert stop_process(handle) is False  # stopping again is harmless


def test_orphans_of_a_killed_leader_are_stopped(
    tmp_path: Path, started: list[ProcessHandle]
) -> None:
    log = tmp_path / "tree.log"
    handle = _start(SPAWN_CHILD, log, started)
    grandchild = int(_wait_for_output(log))
    os.kill(handle.pid, signal.SIGKILL)
    psutil.Process(handle.pid).wait(timeout=5)  # reap our child: the leader is gone
    assert not handle.is_running()
    assert not _gone(grandchild)
    assert stop_process(handle, timeout_s=5.0) is True
    assert _gone(grandchild)


def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path, started: list[ProcessHandle]) -> None:
    log = tmp_path / "stubborn.log"
    handle = _start(IGNORE_TERM, log, started)
    assert _wait_for_output(log) == "ready"  # the handler is installed
    t0 = time.monotonic()
    assert stop_process(handle, timeout_s=0.5) is True
    assert _gone(handle.pid)
    assert 0.5 <= time.monotonic() - t0 < 5.0


def test_stop_several_at_once(tmp_path: Path, started: list[ProcessHandle]) -> None:
    a = _start(SLEEP, tmp_path / "a.log", started)
    b = _start(SLEEP, tmp_path / "b.log", started)
    stop_process(b)
    assert stop_processes([a, b], timeout_s=5.0) == [True, False]
    assert not a.is_running()


# --- readiness -----------------------------------------------------------------------


def test_wait_returns_once_the_check_passes(tmp_path: Path, started: list[ProcessHandle]) -> None:
    handle = _start(SLEEP, tmp_path / "a.log", started)
    calls = iter([False, False, True])
    wait_until_ready(
        lambda: next(calls), what="thing", process=handle, log_path=tmp_path / "a.log", timeout_s=5
    )


def test_wait_fails_fast_quoting_the_log_when_the_process_dies(
    tmp_path: Path, started: list[ProcessHandle]
) -> None:
    log = tmp_path / "dies.log"
    handle = _start("import sys; print('bad config: boom', flush=True); sys.exit(3)", log, started)
    t0 = time.monotonic()
    with pytest.raises(InfraError, match=r"(?s)thing exited during startup.*bad config: boom"):
        wait_until_ready(lambda: False, what="thing", process=handle, log_path=log, timeout_s=30)
    assert time.monotonic() - t0 < 10


def test_wait_times_out_naming_the_log(tmp_path: Path, started: list[ProcessHandle]) -> None:
    log = tmp_path / "slow.log"
    handle = _start(SLEEP, log, started)
    with pytest.raises(InfraError, match=rf"did not answer within 0 s; see {log}"):
        wait_until_ready(lambda: False, what="thing", process=handle, log_path=log, timeout_s=0.3)


def test_log_tail_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "missing.log") == ""


# --- child environment ---------------------------------------------------------------


def test_child_env_adds_quiet_defaults_keeps_user_choices_and_applies_extras() -> None:
    env = child_env({"EXTRA": "1"}, base={"MLFLOW_DISABLE_TELEMETRY": "false", "PATH": "/bin"})
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["PATH"] == "/bin"
    assert env["EXTRA"] == "1"
    assert set(QUIET_DEFAULTS) <= set(env)
