"""A stop signal to the whole process group, as Granian's supervisor sees it.

Theory of operation:

* systemd's stop (``KillMode=control-group``), ``kill -- -PID`` and a terminal's
  Ctrl-C send the signal to every process of ``sse-fast serve`` at once: Granian's
  main process and each worker. A worker with nothing to drain can be gone before
  the main process has run its own signal handler (the kernel delivers the signal to
  both; Python runs the handler when the main thread next gets to it, later on a
  loaded machine). Granian's watcher thread then sees a worker exit its parent did
  not ask for: it logs ``[ERROR] Unexpected exit from worker-N`` and, once stopped,
  ``serve`` raises ``SystemExit(1)``. Nothing went wrong: the stop was asked for and
  the worker stopped as asked (status 0).
* ``stopped_cleanly`` tells that case from a failure, after Granian returned: the
  stop signal reached the main process and every worker it called unexpected exited
  with status 0 (``remember_workers`` keeps them as Granian stops them: it forgets
  them after). A worker that failed (another status), or an exit without a stop
  signal, is not clean.
* ``GroupStopLog`` says the same in the log, as Granian's watcher writes it: for a
  worker that exited with status 0 it waits (``STOP_SIGNAL_WAIT``, in that watcher
  thread only) for the main process to take the stop signal; when it does, the line
  is an INFO that says what happened, otherwise Granian's ERROR stays as it is. So
  an operator's journal shows no error after a clean stop, and a worker that
  stopped alone (one SIGTERM to one worker) is still an error.
* A stop signal that another thread of the main process takes. The kernel gives a
  signal sent to the process to any thread that does not block it (the main one,
  unless a signal is already pending there); Python then only sets a flag for the
  main thread, which runs the handler at its next bytecode. Granian's main thread
  waits in ``main_loop_interrupt.wait()`` with no timeout, asleep in the kernel
  until another thread wakes it: a SIGTERM taken by one of its watcher threads (or
  the relay's starting thread) went unheard, and ``sse-fast serve`` kept serving
  until a second signal or systemd's SIGKILL (seen in CI: no stop in 20 s).
  ``wake_for_signals`` gives Granian an event whose wait wakes every
  ``SIGNAL_POLL`` seconds, so the handler runs within that.
* Nothing of Granian is patched but ``_stop_workers``, wrapped to remember the
  workers, and ``main_loop_interrupt``, replaced by that event; everything reads
  Granian's own attributes (``interrupt_signal``, ``interrupt_children``, ``wrks``)
  and does nothing where another Granian has none: ``tests/test_granian_contract.py``
  fails by name when a release changes one (``docs/operations/granian.md``).
* Granian waits for a stopping worker in two threads: its watcher thread
  (``join()``, which reaps the process) and the main thread (``join(timeout)``).
  When the watcher reaps it first, the main thread's ``join`` returns with no exit
  status yet, its ``is_alive()`` still says True, and it logs ``[WARNING] Killing
  worker-N after it refused to gracefully stop`` for a worker that stopped as asked,
  at once (seen once in CI; 1 of 75 stops sent as 4 workers were forked, beside 4
  CPU hogs). ``GroupStopLog``
  asks the process itself (its sentinel, readable once it exited): a worker that
  had exited makes that line a DEBUG one that says so; one still running keeps
  Granian's warning (killed after ``workers_kill_timeout``).
* The relay (several workers, no Redis) takes a group's SIGTERM too, and can exit
  before the main process took it: its supervisor asks ``stop_signal_taken`` the
  same way before it calls the exit a failure (``brokers/_relay/supervisor.py``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = [
    "GRANIAN_LOGGER",
    "SIGNAL_POLL",
    "STOP_SIGNAL_WAIT",
    "GroupStopLog",
    "group_stop_log",
    "remember_workers",
    "stop_signal_taken",
    "stopped_cleanly",
    "wake_for_signals",
]

#: seconds Granian's watcher waits, for a worker that exited with status 0, for the
#: main process to take the stop signal that stopped the worker
STOP_SIGNAL_WAIT = 2.0

#: seconds Granian's main thread sleeps at most before it runs a signal handler that
#: another thread's signal left for it
SIGNAL_POLL = 0.2

_log = logging.getLogger("sse_fast")

_UNEXPECTED = re.compile(r"Unexpected exit from worker-(\d+)$")
_KILLING = re.compile(r"Killing worker-(\d+) after it refused to gracefully stop$")


def stop_signal_taken(server: Any) -> bool:
    """Whether Granian's main process took a stop signal (SIGTERM, SIGINT); False
    where another Granian does not say."""
    return bool(getattr(server, "interrupt_signal", False))


def stopped_cleanly(server: Any, workers: list[Any]) -> bool:
    """Whether Granian's exit status 1 after ``serve`` only says that a worker exited
    cleanly (status 0) before the main process took the stop signal it got too.
    ``workers``: Granian's workers as it stopped them (``remember_workers``)."""
    exited = getattr(server, "interrupt_children", None)
    if not stop_signal_taken(server) or not exited:
        return False
    by_index = {getattr(w, "idx", None): w for w in workers}
    return all(_exit_code(by_index.get(index)) == 0 for index in exited)


class _WakingEvent(threading.Event):
    """A ``threading.Event`` whose wait without a timeout wakes every ``SIGNAL_POLL``
    seconds, so the main thread runs the signal handlers other threads left for it."""

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            return super().wait(timeout)
        while not super().wait(SIGNAL_POLL):
            pass  # back in Python: a pending signal's handler runs here
        return True


def wake_for_signals(server: Any) -> None:
    """Give Granian's main loop an event that wakes for signals another thread took
    (see the module's docstring); nothing where another Granian has no such event."""
    event = getattr(server, "main_loop_interrupt", None)
    if type(event) is not threading.Event:
        return
    waking = _WakingEvent()
    if event.is_set():
        waking.set()
    server.main_loop_interrupt = waking


def remember_workers(server: Any) -> list[Any]:
    """A list that holds Granian's workers once it starts stopping them (it forgets them
    after), for ``stopped_cleanly``; empty where Granian works otherwise."""
    seen: list[Any] = []
    stop = getattr(server, "_stop_workers", None)
    if stop is None:
        return seen

    def stopping() -> None:
        seen[:] = list(getattr(server, "wrks", []))
        stop()

    server._stop_workers = stopping
    return seen


#: Granian's own logger (a name of its internals: here, behind the door)
GRANIAN_LOGGER = "_granian"


@contextlib.contextmanager
def group_stop_log(server: Any) -> Iterator[GroupStopLog]:
    """``GroupStopLog`` on Granian's logger while the block runs (``server.serve()``)."""
    granian_log = logging.getLogger(GRANIAN_LOGGER)
    quiet = GroupStopLog(server)
    granian_log.addFilter(quiet)
    try:
        yield quiet
    finally:
        granian_log.removeFilter(quiet)


class GroupStopLog(logging.Filter):
    """A filter for Granian's logger (``_granian``) in serve's main process: its
    "Unexpected exit from worker-N" becomes an INFO line when the worker exited with
    status 0 and the main process took a stop signal within ``wait`` seconds; its
    "Killing worker-N after it refused to gracefully stop" a DEBUG line when the
    worker had in fact exited (see the module's docstring)."""

    def __init__(self, server: Any, wait: float = STOP_SIGNAL_WAIT) -> None:
        super().__init__()
        self._server = server
        self._wait = wait

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the lines it is for; pass every other record unchanged."""
        if record.levelno == logging.WARNING:
            return self._killing(record)
        if record.levelno != logging.ERROR:
            return True
        found = _UNEXPECTED.search(record.getMessage())
        if found is None:
            return True
        number = int(found.group(1))
        if _exit_code(self._worker(number)) != 0:
            return True
        _log.debug(
            "worker-%d exited with status 0: waiting up to %.1f s for the stop signal",
            number,
            self._wait,
        )
        if not self._signalled():
            return True
        return _rewritten(
            record,
            logging.INFO,
            "worker-%d stopped on the stop signal before the main process took it",
            number,
        )

    def _killing(self, record: logging.LogRecord) -> bool:
        found = _KILLING.search(record.getMessage())
        if found is None:
            return True
        number = int(found.group(1))
        if not _exited(self._worker(number)):
            return True
        return _rewritten(
            record,
            logging.DEBUG,
            "worker-%d had exited: Granian's main thread found it before it knew its "
            "status (its watcher thread reaped it), not a refusal to stop",
            number,
        )

    def _worker(self, number: int) -> Any:
        """Granian's worker-``number`` (counted from 1), None where it has none."""
        for worker in getattr(self._server, "wrks", []):
            if getattr(worker, "idx", None) == number - 1:
                return worker
        return None

    def _signalled(self) -> bool:
        """Whether the main process took the stop signal, waiting for it up to the
        bound (the caller is Granian's watcher thread, never the main thread)."""
        deadline = time.monotonic() + self._wait
        while not stop_signal_taken(self._server):
            if threading.current_thread() is threading.main_thread():
                return False  # the main thread's handler cannot run while it waits here
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


def _rewritten(record: logging.LogRecord, level: int, message: str, number: int) -> bool:
    """``record`` says ``message % number`` at ``level``; whether that level is shown."""
    record.msg = message
    record.args = (number,)
    record.levelno = level
    record.levelname = logging.getLevelName(level)
    return logging.getLogger(record.name).isEnabledFor(level)


def _exited(worker: Any) -> bool:
    """Whether a Granian worker's process has exited, reaped or not: its sentinel (the
    end of a pipe the process held) is readable. False when unknown."""
    inner = getattr(worker, "inner", None)
    if getattr(inner, "exitcode", None) is not None:
        return True
    try:
        sentinel = inner.sentinel  # type: ignore[union-attr]
    except (AttributeError, ValueError):  # not a process, or one never started or closed
        return False
    return bool(multiprocessing.connection.wait([sentinel], 0))


def _exit_code(worker: Any) -> int | None:
    """A Granian worker's exit status (None: running, unknown or not a process)."""
    return getattr(getattr(worker, "inner", None), "exitcode", None)
