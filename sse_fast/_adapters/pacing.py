"""Fewer, larger writes while the event loop is saturated (the Starlette adapter).

Theory of operation
-------------------
* Why. A stream's cost is mostly per write, not per byte. Under uvicorn one
  write is the server's ``send``, a system call (on loopback 14-15 us of
  kernel time, which also runs the receiving side) and, with the usual app (a
  queue per subscriber), a task wake-up per event. When events come faster
  than a loop can write them one by one, it falls behind for good: the
  backlog waits in the publishers' sockets and latency grows until clients
  give up. The queues never hold a backlog the adapter could gather (each
  publish wakes every subscriber, and they all run before the next publish is
  read), so nothing merges by itself.
* Load. One ``Pacer`` per event loop measures, while streams are open, how
  busy the loop is, over windows of ``WINDOW`` seconds (and a probe, a timer
  every ``PROBE`` seconds, that ends them): the larger of the loop thread's CPU time over the wall
  time (``time.thread_time``) and the fraction of probes that ran ``LATE``
  seconds or more after they were due. A saturated loop is never idle when a
  probe is due; the probes also see a loop whose thread shares its core
  (Granian's own threads, other processes), which its CPU time does not show.
* Busy. A window at ``ENGAGE`` (0.9) or more makes the loop *busy* for a
  hold of ``HOLD`` seconds (each such window again). Pacing lowers the load
  it is measured by, so a window taken while pacing cannot tell whether the
  loop would keep up without it: when the hold is over the loop is tried
  without pacing for ``TRY_WINDOWS`` windows, and one saturated window turns
  it on again, with the hold doubled (up to ``MAX_HOLD``): a loop that stays
  saturated is tried less and less often (a try lets a backlog build). A try
  that keeps up resets the hold.
* Pacing. While the loop is busy, a stream that receives an event within
  ``delay`` of its last write waits for the pacer's next tick (one timer for
  all such streams, at most ``delay`` seconds away) and then writes that
  event with every one its generator has ready by then, in one write (the
  stream's side, and generators on a timer of their own: "Saturated" in
  ``sse_fast/starlette.py``). An
  event that comes ``delay`` or more after the stream's last write is written
  at once: a stream that receives fewer events a second than ``1 / delay`` is
  not held. A loop that is not saturated never holds anything.
* Cost. While streams are open, a timer callback every ``PROBE`` seconds and a
  thread-time read per window; per held event a future and a list append.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable

#: seconds between probes of the loop's lateness
PROBE = 0.01
#: a probe this many seconds late or more found the loop busy
LATE = 0.005
#: seconds per load measurement (at least: the probe that ends one may be late)
WINDOW = 0.25
#: load (0 to 1) of a window that makes the loop busy
ENGAGE = 0.9
#: seconds the loop stays busy after a window at ENGAGE or more (at first)
HOLD = 2.0
#: the most that hold grows to while the loop stays saturated
MAX_HOLD = 32.0
#: windows a try without pacing lasts (the first still shows some of the pacing)
TRY_WINDOWS = 2


class Pacer:
    """Load measurement and the shared tick of one event loop (see the module
    docstring). Streams call ``opened``/``closed`` and, while ``busy``,
    ``await pacer.tick(delay)``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread_time: Callable[[], float] = time.thread_time,
    ) -> None:
        """``thread_time``: the CPU seconds of the loop's thread so far (a clock of the
        test's where it moves the loop's time itself)."""
        # weakly: _pacers has weak keys, and a value that referred to its key would
        # keep the loop (and the pacer) alive for good
        self.loop: asyncio.AbstractEventLoop = weakref.proxy(loop)
        self._thread_time = thread_time
        self.busy = False
        self.streams = 0
        self.load = 0.0  # the last window's
        self.engaged = 0  # times the loop turned busy (tests, logs)
        self._busy_until = 0.0
        self._hold = HOLD
        self._trying = 0  # windows left of a try without pacing
        self._monitor: asyncio.TimerHandle | None = None
        self._mark = (0.0, 0.0)  # (loop time, thread time) at the window's start
        self._due = 0.0  # when the probe is due
        self._probes = 0  # in this window
        self._late = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = 0.0

    # ------------------------------------------------------------ streams

    def opened(self) -> None:
        self.streams += 1
        if self._monitor is None:
            now = self.loop.time()
            self._mark = (now, self._thread_time())
            self._probes = self._late = 0
            self._due = now + PROBE
            self._monitor = self.loop.call_at(self._due, self.probe)

    def closed(self) -> None:
        self.streams -= 1
        if self.streams <= 0:
            self.streams = 0
            if self._monitor is not None:
                self._monitor.cancel()
                self._monitor = None
            self.busy = False

    def tick(self, delay: float) -> asyncio.Future[None]:
        """A future done at the next tick, at most ``delay`` seconds from now; one
        per waiter (cancelling one leaves the others alone)."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        at = self.loop.time() + delay
        if self._tick is None or at < self._tick_at:
            if self._tick is not None:
                self._tick.cancel()
            self._tick_at = at
            self._tick = self.loop.call_at(at, self._release)
        return waiter

    # ------------------------------------------------------------ the loop's side

    def _release(self) -> None:
        self._tick = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def probe(self) -> None:
        """Timer: was the loop late to run this? Every ``WINDOW`` seconds, measure."""
        now = self.loop.time()
        if now - self._due >= LATE:
            self._late += 1
        self._probes += 1
        if now - self._mark[0] >= WINDOW:
            self.measure(now)
        self._due = now + PROBE
        self._monitor = self.loop.call_at(self._due, self.probe)

    def measure(self, now: float) -> None:
        """The window's load; the loop busy or not (see "Busy")."""
        cpu = self._thread_time()
        (then, cpu_then), self._mark = self._mark, (now, cpu)
        thread = (cpu - cpu_then) / (now - then) if now > then else 0.0
        self.load = load = min(max(thread, self._late / self._probes), 1.0)
        self._probes = self._late = 0
        if load >= ENGAGE:
            if self._trying:  # still saturated without pacing
                self._hold = min(self._hold * 2, MAX_HOLD)
                self._trying = 0
            if not self.busy:
                self.busy = True
                self.engaged += 1
            self._busy_until = now + self._hold
        elif self._trying:
            self._trying -= 1
            if not self._trying:  # kept up for the whole try
                self._hold = HOLD
        elif self.busy and now >= self._busy_until:
            self.busy = False
            self._trying = TRY_WINDOWS


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def pacer(loop: asyncio.AbstractEventLoop) -> Pacer:
    """The pacer of ``loop`` (made on first use)."""
    found = _pacers.get(loop)
    if found is None:
        found = _pacers[loop] = Pacer(loop)
    return found
