"""``sse_fast.testing.ServerProcess`` leaves no server behind when its start fails
in any way (a leftover from a failed start outlived a test session once). Real
processes: servers that fail to start, stop and exit, and what they leave behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from sse_fast import _loopback
from sse_fast.testing import ServerProcess, free_port

from ..support.waiting import until

pytestmark = pytest.mark.processes("ServerProcess's failed starts, stops and leftovers")


def test_a_failing_probe_stops_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerProcess()

    def broken(path: str) -> tuple[int, bytes]:
        raise ValueError("a probe's own bug")

    monkeypatch.setattr(server, "_probe", broken)
    with pytest.raises(ValueError, match="a probe's own bug"), server:
        pass
    assert server.proc is not None and server.proc.poll() is not None
    assert server._group() == []
    assert not os.path.exists(server.log_path)  # its log and data go with it
    assert not os.path.exists(server.own_data_dir)


def test_a_server_that_exits_early_says_why_and_leaves_no_files() -> None:
    """The error carries the server's output; the log (a name of its own per server,
    so nothing later overwrites it) and the data directory are removed."""
    server = ServerProcess(command=[sys.executable, "-c", "print('no such app'); exit(3)"])
    with pytest.raises(RuntimeError, match="server exited early:\nno such app"), server:
        pass
    assert not os.path.exists(server.log_path)
    assert server.own_data_dir and not os.path.exists(server.own_data_dir)


def test_each_server_has_a_log_of_its_own() -> None:
    """Two servers on the same port number (as in two network namespaces) do not share
    a log: one's exit must not remove the other's."""
    first, second = ServerProcess(port=41177), ServerProcess(port=41177)
    assert first.log_path != second.log_path
    for server in (first, second):
        server.remove_files()  # the data directories they made


def test_a_server_stopped_without_its_with_leaves_nothing_once_the_process_ends() -> None:
    """A restart test stops its first server and starts a second: the first one's log
    and data directory stay readable until the test process ends, then go."""
    lines = [
        "from sse_fast.testing import ServerProcess",
        "server = ServerProcess()",
        "server.__enter__()",
        "server.stop()",
        "assert server.output(), 'the log, readable after the stop'",
        "print(server.log_path, server.own_data_dir)",
    ]
    command = [sys.executable, "-c", "\n".join(lines)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    log, data = done.stdout.split()
    assert log.endswith(".log") and data
    assert not os.path.exists(log) and not os.path.exists(data)


def test_a_stop_does_not_wait_for_a_zombie_of_the_group() -> None:
    """An exited process its parent has not reaped is no process left behind: a
    several-worker server's multiprocessing resource tracker exits with the main
    process, then waits for init to reap it (every 2 s on some machines), and every
    stop waited that long. A running one of the group is still named."""
    from sse_fast.testing import _running_in_group

    running = subprocess.Popen(["sleep", "30"], start_new_session=True)
    exited = subprocess.Popen(["true"], start_new_session=True)
    try:
        until(lambda: _state(exited.pid) == "Z", 10, "true exiting")  # not reaped: no wait()
        assert _running_in_group(exited.pid) == []
        assert [line.split()[0] for line in _running_in_group(running.pid)] == [str(running.pid)]
    finally:
        running.kill()
        running.wait()
        exited.wait()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_free_port_is_below_the_kernels_ephemeral_range_and_free() -> None:
    """A client's connect() takes its local port from the ephemeral range: a server's
    port chosen there could be taken by any new connection before the server binds it
    (CI: "port ... is already in use"). ``free_port`` chooses below it, a port it could
    bind, never the same one twice in a row of many."""
    low = _loopback._ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert all(_loopback.LOWEST <= port < low for port in ports), (low, ports)
    assert len(set(ports)) > 40, ports  # chosen at random, not a sequence
    with socket.socket() as sock:
        sock.bind((_loopback.HOST, ports[-1]))  # free when given


def test_a_free_port_taken_is_passed_over_and_no_room_leaves_it_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind((_loopback.HOST, 0))
        busy = taken.getsockname()[1]
        tries = iter([busy, busy, 20_001])
        monkeypatch.setattr(_loopback, "_ephemeral_low", lambda: 30_000)
        monkeypatch.setattr(_loopback._choose, "randrange", lambda low, high: next(tries))
        with socket.socket() as other:  # 20_001 may be in use here: then this test says so
            other.bind((_loopback.HOST, 20_001))
        assert free_port() == 20_001
    monkeypatch.setattr(_loopback, "_ephemeral_low", lambda: _loopback.LOWEST + 10)
    assert free_port() >= 1024  # no room below the range: the kernel's pick
