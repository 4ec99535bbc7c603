"""Restoring: stored events back into a broker's member, with the breaks said.

Used where a server starts on its data directory: by the local broker (which
also writes it) and by each worker of the relay (which only reads it, then
joins the relay's sequence where it is: ``RelayBroker``).
"""

from __future__ import annotations

import logging
import time

from ...protocol import Reason
from .. import Broker
from . import as_sequenced
from .log import Loaded, read
from .records import Event

__all__ = ["RESTORE_CHUNK", "read_into", "restore"]

log = logging.getLogger("sse_fast.storage")

#: events applied at a time when a restart replays the log
RESTORE_CHUNK = 10_000


def restore(broker: Broker, events: list[Event], lost: list[tuple[int, int]]) -> int:
    """Apply stored events to the broker's member, a chunk at a time; where a
    machine crash may have lost events (``lost``), the topics so far get an
    ``sse-fast-missed`` marker in their place (``Member.missed``): a stream
    resuming from before it is told, never resumed past events nobody has."""
    now = time.monotonic()
    gaps = sorted(lost)
    names: set[str] = set()
    batch: list[Event] = []

    member = broker.member

    def deliver() -> None:
        broker.deliver(as_sequenced(batch, now))
        batch.clear()
        # as flushed as in a running server, so the history budget can evict
        # (unflushed frames are kept: over the budget, every store would look
        # at every topic for nothing)
        member.flush_pending()

    def mark(position: int) -> None:
        if batch:
            deliver()
        if names:
            member.missed(sorted(names), position, Reason.LOST_WRITES)

    for event in events:
        while gaps and event.position > gaps[0][1]:
            mark(gaps.pop(0)[1] + 1)  # the position kept for the marker
        batch.append(event)
        names.update(event.topics)
        if len(batch) >= RESTORE_CHUNK:
            deliver()
    for _, last in gaps:  # after the newest event kept: the usual place of a crash
        mark(last + 1)
    if batch:
        deliver()
    return len(events)


def read_into(broker: Broker, path: str) -> Loaded:
    """Read the data directory at ``path`` (never writing it) and apply what it
    holds to ``broker``'s member; ``broker.lost`` and ``first_position`` follow
    it. What was read (``Loaded``)."""
    started = time.perf_counter()
    loaded = read(path)
    broker.lost = loaded.lost
    if loaded.events:
        broker.first_position = loaded.first_position
        restore(broker, loaded.events, loaded.lost)
        log.info(
            "data directory %s: %d events restored in %.2f s",
            path,
            len(loaded.events),
            time.perf_counter() - started,
        )
    return loaded
