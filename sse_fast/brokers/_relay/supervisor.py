"""Keeping the relay running: ``serve``'s main process supervises it.

The relay is one process; if it dies (a crash, the OOM killer, ``kill -9``)
nothing in a worker can bring it back. The supervisor, a thread in the main
process (Granian's ``serve()`` holds the main thread), waits on it, reaps it,
and starts it again on the same socket path after a backoff (``min_delay``
doubling to ``max_delay``; back to ``min_delay`` once a relay stayed up
``stable_after`` seconds); one that cannot even be started (``OSError``: out of file
descriptors, memory or processes, often what ended it) is tried again on the same
backoff, said each time. Workers reconnect by themselves
(``RelayBroker``), and say what a new relay means for their history (the
broker contract). If the relay cannot be restored, the workers' ``/healthz``
fails after ``broker_down_limit`` seconds, so an orchestrator restarts the
whole server.

A stop of the whole server can reach the relay first: systemd's
``KillMode=control-group`` sends SIGTERM to every process at once, and the relay
may take it, wait for the draining workers and exit (status 0) before the main
process has run its own handler. That is no failure to restart from: a relay
that exited with status 0 (or was ended by SIGTERM) is given ``stop_signal_wait``
seconds for ``stop_signalled`` (the main process took a stop signal) to hold, and
then said as INFO and left stopped; the same race Granian's watcher has for the
workers (``sse_fast/_granian/_group_stop.py``). A relay stopped alone (one SIGTERM to its
pid) is still an error, and started again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ..durable._directory import directory_bytes
from .process import run_relay

__all__ = [
    "RelaySupervisor",
]

log = logging.getLogger("sse_fast.relay")


class RelaySupervisor:
    """Runs ``run_relay`` in a child process and starts it again when it dies."""

    def __init__(
        self,
        path: str,
        history_frames: int = 100_000,
        history_bytes: int = 64 * 1024 * 1024,
        store: dict[str, Any] | None = None,
        *,
        start_timeout: float = 10.0,
        min_delay: float = 0.1,
        max_delay: float = 5.0,
        stable_after: float = 30.0,
        stop_signalled: Callable[[], bool] = lambda: False,
        stop_signal_wait: float = 2.0,
    ) -> None:
        self.path = path
        self.history_frames = history_frames
        self.history_bytes = history_bytes
        #: ``EventLog``'s arguments when the relay keeps its events on disk
        self.store = store
        self.start_timeout = start_timeout
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        #: whether the main process took a stop signal (Granian's, under serve)
        self.stop_signalled = stop_signalled
        #: seconds a relay that stopped as on a stop signal waits for ``stop_signalled``
        self.stop_signal_wait = stop_signal_wait
        #: how many times the relay was started again
        self.restarts = 0
        self.process: Any = None
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        #: ``start`` runs in a thread of its own under serve, and a stop signal can come
        #: while it does: the watcher is made and started, or not at all, under this lock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0

    def start(self) -> None:
        """Start the relay and wait until it listens; then watch it."""
        if not self._spawn():
            self.stop()
            raise RuntimeError(
                f"the relay did not start within {self._start_wait():g} s"
                + (
                    ""
                    if self.process.exitcode is None
                    else f" (it exited with {_describe(self.process.exitcode)})"
                )
            )
        with self._lock:
            if self._stopping.is_set():  # stopped while it started: no watcher
                return
            self._thread = threading.Thread(target=self._watch, name="sse-fast-relay-supervisor")
            self._thread.daemon = True
            self._thread.start()

    def _start_wait(self) -> float:
        """How long a starting relay may take: ``start_timeout``, and with a data
        directory the time to read it (``EventLog.open`` of 4M events, 987 MiB:
        10.6 s here; 60 s per GiB allowed, for slower disks and busy machines)."""
        if not self.store:
            return self.start_timeout
        size = directory_bytes(str(self.store["path"]))
        return self.start_timeout + 60.0 * size / 2**30

    def _spawn(self) -> bool:
        ready = self._context.Event()
        self.process = self._context.Process(
            target=run_relay,
            args=(
                self.path,
                ready,
                self.history_frames,
                self.history_bytes,
                self.store,
                os.getpid(),  # the relay stops when this process is gone (``_orphans.py``)
            ),
            name="sse-fast-relay",
            daemon=True,
        )
        self.process.start()
        self._started_at = time.monotonic()
        deadline = time.monotonic() + self._start_wait()
        while not ready.wait(0.2):  # a relay that died while starting is not waited for
            if self.process.exitcode is not None or time.monotonic() > deadline:
                return False
            if self._stopping.is_set():
                return False
        return True

    def _watch(self) -> None:
        delay = self.min_delay
        while not self._stopping.is_set():
            process = self.process
            process.join(0.2)  # also reaps it
            if process.exitcode is None:
                if time.monotonic() - self._started_at > self.stable_after:
                    delay = self.min_delay
                continue
            # said also when the stop came between the reap and here: the relay that
            # exited as on SIGTERM stopped with the server, whichever was seen first
            if self._stopped_with_the_server(process.exitcode):
                log.info(
                    "the relay (pid %s) stopped on the stop signal before the main process took it",
                    process.pid,
                )
                return
            if self._stopping.is_set():  # another end while stopping: said, not restarted
                log.error(
                    "the relay (pid %s) exited with %s while the server stopped",
                    process.pid,
                    _describe(process.exitcode),
                )
                return
            log.error(
                "the relay (pid %s) exited with %s; starting it again in %.1f s",
                process.pid,
                _describe(process.exitcode),
                delay,
            )
            if not self._restart(delay):
                return
            delay = min(delay * 2, self.max_delay)

    def _restart(self, delay: float) -> bool:
        """Start the relay again after ``delay`` seconds, and again (the delay doubling)
        while it cannot even be started (``OSError``: out of file descriptors, memory or
        processes, often what ended it); False if the server stops meanwhile."""
        while not self._stopping.wait(delay):
            self.restarts += 1
            try:
                started = self._spawn()
            except Exception as exc:  # left to end this thread, no relay ever again
                log.exception(
                    "the relay could not be started again (%r); trying again in %.1f s",
                    exc,
                    min(delay * 2, self.max_delay),
                )
                delay = min(delay * 2, self.max_delay)
                continue
            if started:
                log.warning("the relay is running again (pid %s)", self.process.pid)
            else:
                log.error("the restarted relay did not start within %g s", self._start_wait())
                self.process.kill()
            return True
        return False

    def _stopped_with_the_server(self, exitcode: int) -> bool:
        """Whether a relay that exited with ``exitcode`` stopped on a stop signal to the
        whole server: it exited as SIGTERM makes it (status 0, or ended by the signal
        before it took it) and the main process takes a stop signal within
        ``stop_signal_wait`` seconds (waited for here, in the watcher's thread), or
        the supervisor is stopped meanwhile."""
        if exitcode not in (0, -signal.SIGTERM):
            return False
        deadline = time.monotonic() + self.stop_signal_wait
        while not self.stop_signalled():
            if time.monotonic() >= deadline:
                return False
            if self._stopping.wait(0.01):
                return True
        return True

    def stop(self) -> None:
        """Stop watching, then stop the relay (after the workers are gone); also while
        ``start`` is under way in another thread."""
        self._stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(5)
        process = self.process
        if process is not None and process.exitcode is None:
            process.terminate()
            process.join(5)
            if process.exitcode is None:
                process.kill()
                process.join(5)


def _describe(exitcode: int) -> str:
    if exitcode < 0:
        import signal

        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"status {exitcode}"
