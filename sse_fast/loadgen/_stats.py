"""Counting what subscribers saw: latency histograms and per-process counters."""

from __future__ import annotations

import asyncio
import errno
import math
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LatencyHistogram", "ProcessStats"]


class LatencyHistogram:
    """Log-bucketed latencies (1 % resolution from 1 us to ~100 s); mergeable."""

    FACTOR = math.log(1.01)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.maximum = 0.0

    def add(self, seconds: float) -> None:
        """Count one latency of ``seconds``."""
        micros = max(seconds * 1e6, 1.0)
        index = int(math.log(micros) / self.FACTOR)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        if seconds > self.maximum:
            self.maximum = seconds

    def merge(self, other: dict[str, Any]) -> None:
        """Add the counts of another histogram, as ``dump`` gave them."""
        for key, count in other["counts"].items():
            self.counts[int(key)] = self.counts.get(int(key), 0) + count
        self.total += other["total"]
        self.maximum = max(self.maximum, other["maximum"])

    def dump(self) -> dict[str, Any]:
        """The histogram as a dict (for another process's ``merge``)."""
        return {"counts": self.counts, "total": self.total, "maximum": self.maximum}

    def percentile(self, fraction: float) -> float:
        """The latency (seconds) under which ``fraction`` of the counted ones fall: the upper edge
        of its bucket; NaN when nothing was counted."""
        if not self.total:
            return float("nan")
        rank = fraction * self.total
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return math.exp((index + 1) * self.FACTOR) / 1e6
        return self.maximum


@dataclass
class ProcessStats:
    """What the subscribers of one client process counted."""

    received: int = 0
    measured: int = 0
    duplicates: int = 0
    lost: int = 0
    foreign: int = 0
    closed: int = 0
    connect_errors: int = 0
    # why connections failed: "HTTP 429", "refused", "timeout", ... -> count
    connect_failures: dict[str, int] = field(default_factory=dict)
    measuring: bool = False
    measure_from: float = 0.0  # events published before this wall time are not counted
    measure_until: float = math.inf  # nor those published at or after this one
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    # per connection, from its request (in a storm, from the storm's start): the
    # response head, and the first event that counts
    connect_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_event: LatencyHistogram = field(default_factory=LatencyHistogram)
    # optional features (run_load's first_event_probe, slow_every, reconnect_after):
    first_event_from: float = 0.0  # wall time the connection storm began (0: no storm)
    slow_histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    slow_received: int = 0
    slow_read: float = 0.5  # slow consumers read for this long ...
    slow_pause: float = 0.0  # ... then stop reading for this long (0: never pause)
    slow_rcvbuf: int = 4096  # SO_RCVBUF of slow consumers' sockets
    reconnects: int = 0
    reconnect_errors: int = 0
    reconnect_seconds: float = 0.0
    resumed_with_id: int = 0
    reconnects_on_close: int = 0  # streams the server ended, reconnected (reconnect_on_close)
    come_backs: int = 0  # reconnects answered with an end and no event (not back)
    loop_lag_max: float = 0.0  # seconds: the longest the process's loop was late (measured)
    #: wall time the run began: an event stamped earlier was sent before this run (a
    #: server replaying its buffer to new subscribers) and is counted apart, in
    #: ``before_run``, never as received, lost, duplicated, latency or first event
    run_began: float = 0.0
    before_run: int = 0
    #: events received, in the window, of publishes whose answer was lost (the server
    #: took them after all): in ``received``, not in what the run expected
    delivered_unanswered: int = 0
    #: while measuring: response body bytes as they came (compressed or not), the same
    #: decoded, and the events that count read from them (in the window or not)
    wire_bytes: int = 0
    decoded_bytes: int = 0
    events_read: int = 0
    #: while measuring: body bytes taken in by the streams that do not read their events
    #: (``read_every``), as they came
    drained_bytes: int = 0
    #: streams by their response's Content-Encoding ("identity" for none)
    codings: dict[str, int] = field(default_factory=dict)

    def start_measuring(self, measure_from: float, measure_until: float = math.inf) -> None:
        """Count afresh events published at or after ``measure_from`` and before
        ``measure_until`` (wall times)."""
        self.measure_from = measure_from
        self.measure_until = measure_until
        self.received = self.measured = self.duplicates = self.lost = 0
        self.delivered_unanswered = 0
        self.wire_bytes = self.decoded_bytes = self.events_read = self.drained_bytes = 0
        self.loop_lag_max = 0.0
        self.histogram = LatencyHistogram()
        self.slow_histogram = LatencyHistogram()
        self.slow_received = 0
        self.measuring = True


def count_into(counts: dict[str, int], key: str) -> None:
    """Add one to ``counts[key]``."""
    counts[key] = counts.get(key, 0) + 1


def failure_name(exc: BaseException) -> str:
    """A short name for why a connection or request failed."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    code = exc.errno if type(exc) is OSError else None
    if code is not None and code in errno.errorcode:
        # no subclass names it: EMFILE (this process's open-file limit), EADDRNOTAVAIL
        # (no local port left), ENETUNREACH ...
        return f"OSError {errno.errorcode[code]}: {os.strerror(code)}"
    return type(exc).__name__
