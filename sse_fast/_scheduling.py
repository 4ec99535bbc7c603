"""The scheduling policy of ``sse-fast serve``'s processes (``--scheduling``).

Theory of operation
-------------------
A worker is two kinds of threads: the event loop, which runs the app and hands each
write of a flush to Granian with an eager ``send``, and Granian's I/O thread, which
makes the writes. Under the kernel's default policy (SCHED_OTHER) a thread that wakes
another on the same core is often preempted by it at once: the I/O thread, woken by
the first write handed to it, took the core, wrote that one frame, slept, and the loop
went on to hand it the next. With 10,000 subscribers on topics of their own, one
worker and its I/O thread on one core (``benches/notifications.py``), that was 0.4
context switches per event delivered at saturation (0.2 of the loop preempted, 0.2 of
the I/O thread waking and sleeping again); with SCHED_BATCH, 0.04, as the loop hands
a whole flush over before the I/O thread runs. In the same run
(``benches/results/notifications_calls_3.md``): single ``POST``s 1.43x, 256 tasks
calling ``Publisher.publish()`` 1.07x, batches of 100 the same (they kept the I/O
thread busy anyway); a broadcast to 15,000 streams the same per core-second
(``scheduling_saturation.md``). With a core to spare the woken thread runs there at
once, as before.

SCHED_BATCH changes nothing else: the same share of the CPU (nice values keep theirs)
and no privilege needed. A thread of the server that wakes on a core another thread is
using (of the server or another process) waits for the kernel's next tick, a few
milliseconds at most, instead of taking the core at once. ``serve`` sets it on its own
thread before Granian starts; every process and thread started from there on
(Granian's workers, their threads, the relay) inherits it. An app embedded in another
server keeps its host's policy.
"""

from __future__ import annotations

import os

__all__ = ["SCHEDULING", "apply_scheduling"]

#: the policies ``--scheduling`` takes
SCHEDULING = ("batch", "normal")


def apply_scheduling(policy: str) -> tuple[bool, str]:
    """Set the calling thread's policy (inherited by the processes and threads it starts
    from now on); whether it was set, and what to log."""
    if policy not in SCHEDULING:
        raise ValueError(f"scheduling must be one of {SCHEDULING}, got {policy!r}")
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None or not hasattr(os, "SCHED_BATCH"):
        return False, f"scheduling {policy}: not on this system (Linux only), the default kept"
    kind = os.SCHED_BATCH if policy == "batch" else os.SCHED_OTHER
    try:
        setter(0, kind, os.sched_param(0))
    except OSError as exc:  # a sandbox that forbids it: serve as before, and say so
        return False, f"scheduling {policy}: refused here ({exc.strerror}), the default kept"
    if policy == "batch":
        return True, "threads scheduled as SCHED_BATCH (--scheduling normal: the kernel's default)"
    return True, "threads scheduled as SCHED_OTHER, the kernel's default (--scheduling normal)"
