"""Stops of ``sse-fast serve``'s main process that reach it oddly.

* A stop signal that a thread of the main process other than the main one takes
  (``sse_fast/_granian/_group_stop.py``, ``wake_for_signals``): the kernel gives a signal sent
  to a process to any of its threads that does not block it, and Python leaves the
  handler to the main thread, which Granian had asleep in an event's wait with no
  timeout. CI once saw a server ignore its SIGTERM for 20 s.
* ``kill -9`` of the main process alone (``sse_fast/_orphans.py``): its workers and
  relay went on serving as orphans, holding the port and the data directory; now
  they stop within a second, and a data directory still held names its holders.
Real processes: the signals and the process group are the subject.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sse_fast.testing import ServerProcess, free_port

from ..support.waiting import until

#: seconds within which the workers and the relay stop once the main process is gone
ORPHAN_LIMIT = 1.0

pytestmark = [
    pytest.mark.skipif(
        not hasattr(ctypes.CDLL(None), "tgkill"), reason="needs the C library's tgkill (Linux)"
    ),
    pytest.mark.processes("SIGTERM to a real server, its workers and its relay"),
]


def _tgkill(pid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to thread ``tid`` of process ``pid`` (not to the process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sigterm_taken_by_another_thread_of_the_main_process_stops_the_server(
    workers: int,
) -> None:
    with ServerProcess("--workers", str(workers)) as server:
        assert server.proc is not None
        pid = server.proc.pid
        threads = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
        assert threads, "Granian's main process runs threads (its workers' watchers)"
        # the oldest thread with one worker, the newest with two: not one thread's luck
        thread = threads[0] if workers == 1 else threads[-1]
        _tgkill(pid, thread, signal.SIGTERM)
        try:
            code = server.proc.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no stop 15 s after a SIGTERM to thread {thread} of {pid}")
        output = server.output()
    assert code == 0, output
    assert "Granian shutdown completed" in output, output


def _running(pid: int) -> bool:
    """Whether ``pid`` runs: not gone, not a zombie (whoever reaps the orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_the_workers_and_the_relay_stop_within_a_second_of_a_kill_9_of_the_main_process(
    workers: int,
) -> None:
    """``kill -9`` of the main process alone (the OOM killer, a script that signals one
    pid): its workers (and the relay, with two) stop within ``ORPHAN_LIMIT``, and a new
    server starts on the same port and the same data directory."""
    with ServerProcess("--workers", str(workers)) as server:
        assert server.proc is not None
        # the workers; with two, the relay and multiprocessing's resource tracker too
        children = server.worker_pids()
        assert len(children) >= (workers + 1 if workers > 1 else 1), children
        server.proc.kill()
        killed = time.monotonic()
        server.proc.wait(5)
        until(
            lambda: not any(_running(pid) for pid in children),
            10,
            f"the children {children} stopping after the main process",
        )
        took = time.monotonic() - killed
        assert took < ORPHAN_LIMIT, f"the workers took {took:.2f} s to stop"
        output = server.output()
        assert output.count("the main process (pid") == workers + (workers > 1), output
        with ServerProcess(
            "--workers", str(workers), port=server.port, data_dir=server.own_data_dir
        ) as again:
            assert again.proc is not None and again.proc.poll() is None


def test_a_data_directory_held_by_the_workers_of_a_dead_main_process_names_them(
    tmp_path: Path,
) -> None:
    """A main process that took the data directory's lock is gone, and a process it forked
    (its descriptor, and so the lock, with it) holds it: ``sse-fast serve`` on that
    directory is refused with a line naming the live holder and the dead main process,
    not only the dead one's pid that the lock file records."""
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, sys, time
                from sse_fast.brokers.durable._directory import DataDirectory
                DataDirectory({str(data_dir)!r}).acquire()
                child = os.fork()
                if child:  # the main process: say who holds it, and die
                    print(os.getpid(), child, flush=True)
                    os._exit(0)
                sys.stdin.read()  # the forked one: holds the lock until told
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        assert holder.stdout is not None
        main, child = (int(pid) for pid in holder.stdout.readline().split())
        assert holder.wait(10) == 0
        refused = subprocess.run(
            [sys.executable, "-m", "sse_fast", "serve", "--port", str(free_port())],
            env={**os.environ, "SSE_FAST_DATA_DIR": str(data_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()  # the forked one reads its end and exits
        holder.stdout.close()
        if child:
            until(lambda: not _running(child), 10, f"the lock's holder {child} exiting")
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert f"held by pid {child}," in line, line
    assert f"main process (pid {main}) is gone" in line, line
