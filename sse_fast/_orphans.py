"""No worker and no relay outlives ``sse-fast serve``'s main process.

Theory of operation
-------------------
* The main process supervises the others: Granian's workers (forked from it) and,
  with several workers and no Redis, the relay (spawned by it). When it dies without
  stopping them (``kill -9`` of its pid alone, the OOM killer, a supervisor that
  signals one pid) they would go on as orphans: answering ``/readyz``, acknowledging
  publishes, holding the port and the data directory's lock (the workers inherited
  its descriptor at fork), with nobody left to restart or stop them.
* Each of them runs ``stop_when_orphaned(main_pid, ...)``: a daemon thread that asks
  every ``PARENT_POLL`` seconds whether its parent is still the main process
  (``os.getppid()``). The kernel gives a dead process's children to init (or a
  subreaper) as it dies, before anyone reaps it, and a new parent is never the pid
  of the dead one (both lived at once), so the question cannot be fooled by a pid
  used again. ``main_pid`` is handed down (``Handoff.main_pid``; the relay's
  argument), not read with ``getppid`` in the child: a main process gone before the
  child looked would otherwise never be missed.
* Why not the alternatives. ``prctl(PR_SET_PDEATHSIG)`` fires when the parent
  *thread* ends, not the process: the relay is started by a thread of the main
  process that ends once the relay listens, and started again by the supervisor's
  thread; Linux only, too. A callback on the event loop runs late or not at all
  while the loop is busy (a worker restoring its history blocks it for seconds); a
  thread runs whenever the interpreter lets it, and a hard exit needs none of the
  loop. A pidfd would wake at once, but on Linux only; a ``getppid`` ten times a
  second costs nothing.
* What an orphan does: a drain cut short. It sends itself SIGTERM, the stop it
  would have got from the main process (a worker tells its streams to come back,
  spread out, and stops; the relay waits for its workers and closes its data
  directory cleanly), and whatever still runs ``ORPHAN_GRACE`` seconds later
  exits at once (``os._exit``: streams cut, a store left as a crash leaves it,
  which the next start reads). So every process is gone within ``PARENT_POLL +
  ORPHAN_GRACE`` (0.6 s) of the main process's end, well inside a second.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

__all__ = ["ORPHAN_GRACE", "PARENT_POLL", "stop_when_orphaned"]

#: seconds between two looks at this process's parent
PARENT_POLL = 0.1
#: seconds an orphan's stop (its SIGTERM) may take before the process exits at once
ORPHAN_GRACE = 0.5

log = logging.getLogger("sse_fast")


def stop_when_orphaned(main_pid: int, name: str) -> threading.Thread | None:
    """In a process that serve's main process (``main_pid``) started: stop this
    process when the main process is gone (see the module's docstring). ``name``
    says which process this is in the log. None where there is nothing to watch:
    no main process named (not under serve), or this is it (workers as threads)."""
    if main_pid <= 0 or main_pid == os.getpid():
        return None
    watcher = threading.Thread(
        target=_watch, args=(main_pid, name), name="sse-fast-orphan-watch", daemon=True
    )
    watcher.start()
    return watcher


def _watch(main_pid: int, name: str) -> None:
    while os.getppid() == main_pid:
        time.sleep(PARENT_POLL)
    log.warning(
        "%s (pid %d): the main process (pid %d) is gone; stopping, in %.1f s at most",
        name,
        os.getpid(),
        main_pid,
        ORPHAN_GRACE,
    )
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE)
    log.warning("%s (pid %d): not stopped in %.1f s: exiting now", name, os.getpid(), ORPHAN_GRACE)
    os._exit(1)
