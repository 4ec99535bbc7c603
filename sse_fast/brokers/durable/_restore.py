"""Restoring: stored events back into a broker's member, with the breaks said.

Used where a server starts on its data directory: by the local broker (which
also writes it) and by each worker of the relay (which only reads it, then
joins the relay's sequence where it is: ``RelayBroker``). A server's start
restores gradually (``restore_gradually``, ``read_into``): the files are read
in a thread (``read_stoppably``), which gives the event loop the GIL between
slices of a segment (``records.scan``), and the events applied a chunk at a time
with a turn of the event loop between chunks, so the worker answers ``/livez``
and ``/readyz`` all along; ``RestoreProgress`` says how far it is. The
cyclic garbage collector is paused meanwhile (``sse_fast/_collector.py``): its
full collections over the events read back stalled the loop for up to 1.6 s. A worker
stopped meanwhile (SIGTERM) cancels its start: the reading thread is told to stop
and gives up within a slice, so the process exits at once rather than after the
whole directory is read; what was read is freed beside the stop, a slice at a
time in a daemon thread (``_collector.discard``): freed at once it held a
stopping worker 0.93 s (2 million events, 4 workers on 2 cores beside 2 CPU hogs).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from ..._collector import discard, free_gradually, gc_paused, pause, resume
from ...protocol import Reason
from .. import Member
from .._sequencing import RecentIds, Sequenced
from ._reading import Loaded
from ._reading import read as read_directory
from ._records import Event, ReadStopped

__all__ = [
    "RESTORE_CHUNK",
    "ReadStopped",
    "RestoreProgress",
    "as_sequenced",
    "let_go",
    "read_into",
    "read_stoppably",
    "remember_ids",
    "restore_gradually",
]

log = logging.getLogger("sse_fast.storage")

T = TypeVar("T")


def as_sequenced(events: Iterable[Event], accepted_at: float) -> list[Sequenced]:
    """Stored events as the members apply them (``accepted_at``: now, so the
    replay does not count in the delivery latency)."""
    return [Sequenced(e.position, e.id, e.topics, e.frame, accepted_at) for e in events]


def remember_ids(recent: RecentIds, events: Sequence[Event]) -> int:
    """Put the publishers' ids of the last ``RETRY_WINDOW`` seconds back in the
    retry memory, as old as they are; how many."""
    now_wall = time.time()
    now = recent.clock()
    count = 0
    for event in events:
        age = now_wall - event.wall
        if event.given and age < recent.window:
            recent.restore(event.id, event.topics, now - max(0.0, age))
            count += 1
    return count


#: events applied at a time when a restart replays the log
RESTORE_CHUNK = 10_000


class RestoreProgress:
    """How far a start's restoring of history is: ``total`` events to apply (None
    while the data directory is still being read) and ``applied`` so far."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.applied = 0


async def restore_gradually(
    member: Member, events: list[Event], lost: list[tuple[int, int]], progress: RestoreProgress
) -> int:
    """Apply stored events to ``member`` (a broker's hub), a chunk at a time with a
    turn of the event loop after each (``progress`` counts the events applied);
    where a machine crash may have lost events (``lost``), the topics so far get an
    ``sse-fast-missed`` marker in their place (``Member.missed``): a stream resuming
    from before it is told, never resumed past events nobody has."""
    progress.total = len(events)
    for applied in _restoring(member, events, lost):
        progress.applied = applied
        await asyncio.sleep(0)
    progress.applied = len(events)
    return len(events)


def _restoring(member: Member, events: list[Event], lost: list[tuple[int, int]]) -> Iterator[int]:
    """``restore_gradually``'s work, pausing after each chunk delivered (yields the
    events applied)."""
    now = time.monotonic()
    applied = 0
    gaps = sorted(lost)
    names: set[str] = set()
    batch: list[Event] = []

    def deliver() -> None:
        nonlocal applied
        member.apply(as_sequenced(batch, now))
        applied += len(batch)
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
            yield applied
    for _, last in gaps:  # after the newest event kept: the usual place of a crash
        mark(last + 1)
    if batch:
        deliver()
        yield applied


async def let_go(events: list[Event]) -> None:
    """Empty ``events``, freeing them a chunk at a time with a turn of the event loop
    between chunks (1.5 million freed at once stalled the loop 0.4 s)."""
    while events:
        del events[-RESTORE_CHUNK:]
        await asyncio.sleep(0)


async def read_stoppably(reading: Callable[[threading.Event], Loaded]) -> Loaded:
    """``reading(stop)`` (``read``, ``EventLog.open``) in a daemon thread of its own,
    the collector paused from its start until what it read is the caller's (or is
    being discarded: ``sse_fast/_collector.py``). Cancelled (the
    worker stops while it starts), the thread is told to stop and this returns at
    once: the thread gives up within a slice of a segment (``ReadStopped``) and frees
    what it had read a slice at a time, so neither the stop nor the process's exit
    waits for it (an executor's thread is waited for at exit), and the event loop
    is not held while millions of events are freed. A reading that ends as it is
    cancelled has its events discarded the same way."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Loaded] = loop.create_future()
    stop = threading.Event()

    def settle(result: Loaded | None, error: BaseException | None) -> None:
        try:
            if answer.cancelled():
                if result is not None:
                    discard(result.events)
            elif error is not None:
                answer.set_exception(error)
            elif result is not None:
                answer.set_result(result)
            else:  # pragma: no cover - a reading only stops once cancelled
                answer.set_exception(ReadStopped("the reading of the data directory was stopped"))
        finally:
            resume()  # the reading's pause, held until its events are someone's

    def run() -> None:
        result: Loaded | None = None
        error: BaseException | None = None
        try:
            result = reading(stop)
        except ReadStopped:
            pass  # what it had read is freed: the reading frees it as it stops
        except BaseException as exc:  # said by the awaiting coroutine
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits for this reading
            try:
                if result is not None:
                    free_gradually(result.events)
            finally:
                resume()

    pause()
    try:
        threading.Thread(target=run, name="sse-fast-read", daemon=True).start()
    except BaseException:
        resume()
        raise
    try:
        return await answer
    finally:
        stop.set()


async def read_into(
    member: Member, path: str, progress: RestoreProgress, read: Callable[[Loaded], None]
) -> Loaded:
    """Read the data directory at ``path`` (never writing it; in a thread) and
    apply what it holds to ``member`` (``restore_gradually``), after
    telling ``read`` (the broker takes its lost ranges and first position from
    it). What was read (``Loaded``),
    its events let go once applied (``Loaded.count`` says how many): the cyclic
    garbage collector is paused while they are held (``sse_fast/_collector.py``)."""
    started = time.perf_counter()
    with gc_paused():
        loaded = await read_stoppably(lambda stop: read_directory(path, stop=stop))
        try:
            read(loaded)
            if loaded.events:
                await restore_gradually(member, loaded.events, loaded.lost, progress)
                log.info(
                    "data directory %s: %d events restored in %.2f s",
                    path,
                    len(loaded.events),
                    time.perf_counter() - started,
                )
            await let_go(loaded.events)  # before the collector runs again
        except BaseException:  # a stop meanwhile: freed beside it, still paused
            discard(loaded.events)
            raise
    return loaded
