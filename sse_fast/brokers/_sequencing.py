"""Sequencing: publish requests become sequenced events.

Every published event gets a *position*: one number, hub-global, from exactly
one sequencer (a broker, see ``sse_fast/brokers``), so every member of a
server applies the same events in the same order and holds identical rings.
The SSE ``id`` is the publisher's id when given, else ``str(position)``.
Positions start at the wall clock in microseconds when the sequencer starts,
so ids keep growing across restarts and an id from an earlier run is
recognisably too old. Each frame is encoded once, here, by the sequencer.

Retries. A publisher that did not hear back (a timeout, a dropped connection)
cannot know whether its publish happened. When it gives its events ids, a
retry is harmless: an event whose id was published to the same topics within
``RETRY_WINDOW`` seconds (and, in one server's memory, within its last
``RETRY_IDS`` ids) is taken as that event again and is not published a second
time (its answer is the same id). So an id must not be reused for a
different event on the same topics within that window; ids used for resuming
should be unique anyway.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .._core import encode, encode_sequenced
from ..publishing import PublishRequest

__all__ = [
    "RETRY_IDS",
    "RETRY_WINDOW",
    "RecentIds",
    "Sequenced",
    "first_position",
    "make_frame",
    "sequence",
    "sequence_once",
]


class Sequenced(NamedTuple):
    """An event after sequencing: what every member applies (never changed after).
    A tuple, so that the native core builds and reads it without a Python call per
    field (``encode_sequenced``, ``TopicTable.store``)."""

    position: int
    id: str
    topics: tuple[str, ...]
    frame: bytes
    accepted_at: float  # time.monotonic() when the publish was accepted (latency metric)


#: seconds a publisher's event id is remembered (a retry within them is not published again)
RETRY_WINDOW = 300.0  # seconds a publisher's event id is remembered
#: the most ids remembered (the oldest go first)
RETRY_IDS = 100_000  # ids remembered at most (the oldest go first)


class RecentIds:
    """The ids publishers gave recently, by topics: what makes a retry harmless.

    Remembered for ``window`` seconds, and ``size`` ids at most: at a high rate of
    publishes with ids the window is the last ``size`` ids (at 20,000 a second,
    5 s). An ``OrderedDict``, oldest first: dropping the oldest stays O(1) (a
    plain dict's first key gets slower to find with every deletion)."""

    def __init__(
        self,
        window: float = RETRY_WINDOW,
        size: int = RETRY_IDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.size = size
        self.clock = clock
        self._seen: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def repeated(self, request: PublishRequest, now: float) -> bool:
        """True when ``request``'s id was published to its topics in the window;
        else remember it (so a repeat within one batch counts too)."""
        key = (request.id or "", request.topics)
        seen = self._seen
        when = seen.get(key)
        if when is not None and now - when < self.window:
            return True
        seen[key] = now
        if when is not None:  # expired: to the end, as the newest
            seen.move_to_end(key)
        while len(seen) > self.size:
            seen.popitem(last=False)
        return False

    def forget(self, request: PublishRequest) -> None:
        """Forget ``request``'s id (it was not published after all)."""
        self._seen.pop((request.id or "", request.topics), None)

    def forget_items(self, items: Sequence[Sequenced]) -> None:
        """Forget the ids of sequenced events that were not published after all
        (their storage failed), so a retry of them is published."""
        for item in items:
            self._seen.pop((item.id, item.topics), None)

    def restore(self, event_id: str, topics: tuple[str, ...], when: float) -> None:
        """Remember an id seen at ``when`` (this clock), oldest first: a restart
        rebuilding the memory from the stored events."""
        seen = self._seen
        seen.pop((event_id, topics), None)
        seen[(event_id, topics)] = when
        while len(seen) > self.size:
            seen.popitem(last=False)

    def expire(self, now: float) -> None:
        """Forget the ids older than the window at ``now``."""
        seen = self._seen
        while seen:
            _, when = next(iter(seen.items()))
            if now - when < self.window:
                return
            seen.popitem(last=False)


def sequence_once(
    requests: Sequence[PublishRequest], first: int, accepted_at: float, recent: RecentIds
) -> tuple[list[Sequenced], list[str]]:
    """``sequence`` the requests that are not repeats of recent ones (see
    "Retries"); return the sequenced events and every request's id, in order."""
    if all(request.id is None for request in requests):
        items = sequence(requests, first, accepted_at)
        return items, [item.id for item in items]
    now = recent.clock()
    recent.expire(now)
    fresh = []
    repeats: list[str | None] = []  # the id of each repeat (the answer), None if fresh
    for request in requests:
        repeat = request.id if request.id is not None and recent.repeated(request, now) else None
        repeats.append(repeat)
        if repeat is None:
            fresh.append(request)
    try:
        items = sequence(fresh, first, accepted_at)
    except BaseException:
        for request in fresh:  # nothing was published: forget them
            if request.id is not None:
                recent.forget(request)
        raise
    made = iter(items)
    ids = [next(made).id if repeat is None else repeat for repeat in repeats]
    return items, ids


def first_position() -> int:
    """Where a new sequencer starts: the wall clock in microseconds."""
    return time.time_ns() // 1000


def make_frame(request: PublishRequest, event_id: str) -> bytes:
    """The frame of ``request`` under ``event_id``; ``EncodeError`` when a field cannot be
    encoded."""
    return encode(request.data, event=request.event, id=event_id, retry=request.retry)


def sequence(requests: Sequence[PublishRequest], first: int, accepted_at: float) -> list[Sequenced]:
    """Give ``requests`` the positions from ``first`` on and encode each frame once.

    Raises ``EncodeError`` before anything is sequenced if one of them cannot be
    encoded: a batch is published whole or not at all.
    """
    return encode_sequenced(requests, first, accepted_at, Sequenced)
