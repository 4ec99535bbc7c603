"""A stop signal that a thread of ``sse-fast serve``'s main process other than the
main one takes (``sse_fast/_group_stop.py``, ``wake_for_signals``): the kernel gives
a signal sent to a process to any of its threads that does not block it, and Python
leaves the handler to the main thread, which Granian had asleep in an event's wait
with no timeout. CI once saw a server ignore its SIGTERM for 20 s."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

import pytest

from sse_fast.testing import ServerProcess

pytestmark = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "tgkill"), reason="needs the C library's tgkill (Linux)"
)


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
