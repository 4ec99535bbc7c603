"""The scheduling policy of ``sse-fast serve``'s processes (``--scheduling``).

Theory of operation
-------------------
A worker is two kinds of threads: the event loop, which runs the app and hands each
write of a flush to Granian with an eager ``send``, and Granian's I/O thread, which
makes the writes. Under the kernel's default policy (SCHED_OTHER) a thread that wakes
another on the same core is often preempted by it at once: the I/O thread, woken by
the first write handed to it, took the core, wrote that one frame, slept, and the loop
went on to hand it the next. With 10,000 subscribers on topics of their own, one
worker and its I/O thread on one core (``benches/notifications.py``; the threads'
context switches read from ``/proc/<tid>/status`` in a scratch run, not a committed
table), that was about 0.4 context switches per event at saturation; with
SCHED_BATCH, which does not preempt on waking, 0.04-0.08, as the loop hands a whole
flush over before the I/O thread runs. Measured (``benches/results/
notifications_calls_3.md``, ``_4``): single ``POST``s 20,580-23,147/s against
15,534-15,901 without it; the Publisher's and hand-made batches no clear change (the
runs' noise is larger); a broadcast to 15,000 streams the same per core-second, its p99
1.10-1.16x at saturation (``scheduling_saturation.md``).

What it costs: a woken thread of the server waits for the running thread's slice to
end (milliseconds; longer when several are runnable) instead of taking the core at
once, and other processes on its cores (a proxy, a Redis) still preempt it when they
wake. With a core to spare nothing changes: the woken thread runs there. The same
share of the CPU, no privilege needed.

``serve`` sets it on its own thread before Granian starts; every process and thread
started from there on (Granian's workers, their threads, the relay, programs the app
runs) inherits it. Only the kernel's default is replaced: a policy the operator chose
(``chrt``, systemd's ``CPUSchedulingPolicy=``) is kept, and ``normal`` changes nothing.
An app embedded in another server keeps its host's policy.
"""

from __future__ import annotations

import logging
import os

__all__ = ["SCHEDULING", "apply_scheduling"]

#: the policies ``--scheduling`` takes
SCHEDULING = ("batch", "normal")

_NAMES = {
    getattr(os, name): name
    for name in ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO", "SCHED_RR")
    if hasattr(os, name)
}


def apply_scheduling(policy: str) -> tuple[int, str]:
    """Set the calling thread's policy (inherited by the processes and threads it starts
    from now on) for ``policy``; the level and the line to log."""
    if policy not in SCHEDULING:
        raise ValueError(f"scheduling must be one of {SCHEDULING}, got {policy!r}")
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_BATCH"):
        return logging.INFO, f"scheduling {policy}: this system has no policies (Linux only)"
    current = os.sched_getscheduler(0)
    name = _NAMES.get(current, str(current))
    if policy == "normal":
        return logging.INFO, f"threads scheduled as {name}, as started (--scheduling normal)"
    if current != os.SCHED_OTHER:  # the operator's choice (chrt, systemd): theirs
        return logging.INFO, f"threads scheduled as {name}, as started: kept (not SCHED_BATCH)"
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:  # a sandbox that forbids it: serve as before, and say so
        return (
            logging.WARNING,
            f"scheduling batch: refused here ({exc.strerror}); threads stay {name}",
        )
    return logging.INFO, "threads scheduled as SCHED_BATCH (--scheduling normal: as started)"
