"""Pure-Python topics table: the reference twin of ``src_ext/topic_ext.pyx``.

Theory of operation
-------------------
The hot half of a hub's storage and fan-out, for the per-event work that a
publish does: storing each sequenced event in its topics' rings and handing
what was stored to the streams that are in sync. Everything else about topics
(creating and dropping them, the history budget's eviction order, resuming,
catching up, merging several topics) stays in ``sse_fast/hub``, which subclasses
``TopicTable`` (``hub/_topics.py``'s ``Topics``) and is the only user.

* A ``Topic`` holds its partition (the broker's, given at creation: positions
  of different partitions are not comparable, ``hub/_cursor.py``), its ring
  (the shared empty ``NO_HISTORY`` until its first event), the position of
  each retained frame (``positions``, oldest first; none kept until the first
  event),
  the floor ``evicted_up_to`` (the newest position it no longer holds; raised
  by ``raise_floor`` and ``forget_oldest`` only, never lowered), the
  cursor its in-sync streams were written up to (``flushed``), and its streams
  in three sets: in sync (the first of them held as ``lone`` with its
  ``lone_send``, the others in ``in_sync``), in sync with several topics
  (``in_sync_multi``) and catching up (``catching_up``). A set is a shared
  empty dict, never written to, until it has a first member. Compressed
  streams in sync are the caller's (``coded``: None, or an iterable over them
  that ``members`` includes).
* ``TopicTable.store(items, start, now, dirty, accepted)`` stores sequenced
  events (tuples ``(position, id, topics, frame, accepted_at)``: the brokers'
  ``Sequenced``) from ``items[start]`` on. A topic skips a position it
  already holds (a replay, or an event of several topics delivered once per
  topic), so storing an item twice stores it once. Each topic written to goes
  in ``dirty``; ``accepted`` gets ``[accepted_at, count]`` per run of new
  positions with the same time (the latency metric). It stops early, and
  returns the index of the item to go on from, when a store leaves work for
  the caller: the topic's own ring evicted frames while streams catch up in it
  (returned, to be checked for lag), or the history budget trimmed topics
  (``trimmed``). Calling it again from that index goes on where it stopped.
  It returns ``(len(items), None)`` when all are stored.
* Ids. A frame's id goes in its ring's index (``Ring.resume``) only when the
  publisher gave it: an id that is its position's own (``str(position)``, what
  the sequencer gives an event without one) is found by position instead
  (``hub/_resume.py``), so most frames cost no id entry.
* The budget. All rings together hold at most ``history_budget`` bytes: frame
  data plus ``FRAME_OVERHEAD`` per frame. A store that passes it calls
  ``over_budget()`` (the subclass evicts the history written to longest ago;
  ``by_write`` holds the topics with history in that order, oldest first).
* The newest applied position (``last_position``: what a resume may claim, a
  new stream's first id) is the table's alone: it starts where the table is told
  (its constructor's ``last_position``), rises in ``store`` with each newer
  position stored, and in ``skip_to(position)`` for positions past without
  events stored here (a broker joined a running sequence, a break's marker no
  topic needs). It never falls, and is read-only to everyone else.
* ``TopicTable.flush(dirty, written_type, template)`` writes what each dirty
  topic stored since its ``flushed`` cursor to its in-sync streams: one read of
  the ring, one message (a copy of ``template`` with ``body`` set to the bytes),
  each stream's ``send`` called with it. A result of exactly
  ``written_type`` is a write done; any other result is a write pending (the
  stream goes to catch-up), and a ``send`` that raises is a stream gone. It
  returns ``(delivered, slow, failed, lagged, multi)``: events handed over,
  ``[(subscription, pending result)]``, ``[subscription]``, ``[(topic, lost)]``
  for topics that stored more in one go than their ring holds (their flushed
  cursor jumps to the head; their in-sync streams have lost events), and the
  dirty topics with streams of several topics or compressed ones (``coded``)
  with their cursor before the flush (``{topic: flushed before}``, for the
  caller's merge and compression), or None.
  Nothing is changed in the sets: the caller moves slow, failed and lagged
  streams after the call.
* No I/O: ``send`` is whatever callable the caller registered, called with one
  dict. Nothing here knows of asyncio or sockets.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .errors import Lagged
from .ring_py import Ring

__all__ = ["FRAME_OVERHEAD", "NO_HISTORY", "Topic", "TopicTable", "send_each"]

#: the shared empty ring of every topic without history yet (never written to)
NO_HISTORY = Ring(1, 1)
# the shared empty positions of every topic without history yet (never written to)
_NO_POSITIONS: deque[int] = deque(maxlen=0)
#: bytes counted per retained frame beside its data (the bytes object's header,
#: its slots in the ring, its position in ``positions``, its id and index entry):
#: 219 measured with tracemalloc (tests/hub/test_topics.py checks it is no more),
#: and room for slots not yet filled (a ring's slots double as it fills)
FRAME_OVERHEAD = 320

# A topic's sets until a first member: never written to.
_NO_IN_SYNC: dict[Any, Any] = {}
_NO_MULTI: dict[Any, Any] = {}
_NO_CATCHING_UP: dict[Any, None] = {}


class Topic:
    """One topic: its ring (from its first event on), the position of each
    retained frame, and its streams (see the module doc)."""

    __slots__ = (
        "_floor",
        "_positions",
        "catching_up",
        "coded",
        "flushed",
        "in_sync",
        "in_sync_multi",
        "last_activity",
        "lone",
        "lone_send",
        "name",
        "partition",
        "published",
        "ring",
        "subscribers",
    )

    def __init__(self, name: str, evicted_up_to: int, now: float, partition: int = 0) -> None:
        self.name = name
        #: the broker's partition of this topic (``Broker.partition_of``; 0 with one)
        self.partition = partition
        self.ring = NO_HISTORY
        self._positions: deque[int] = _NO_POSITIONS
        self._floor = evicted_up_to
        self.lone: Any = None
        self.lone_send: Callable[[Any], Any] | None = None
        self.in_sync: dict[Any, Callable[[Any], Any]] = _NO_IN_SYNC
        self.in_sync_multi: dict[Any, Callable[[Any], Any]] = _NO_MULTI
        self.flushed = 0
        self.subscribers = 0
        self.catching_up: dict[Any, None] = _NO_CATCHING_UP
        self.published = 0
        self.last_activity = now
        #: its compressed streams in sync (``hub/_coding.py``: iterable over them), or None
        self.coded: Any = None

    def join_in_sync(self, subscription: Any, send: Callable[[Any], Any]) -> None:
        """``subscription`` (of this topic only) is in sync here, written with ``send``."""
        if self.lone is None:
            self.lone = subscription
            self.lone_send = send
            return
        if self.in_sync is _NO_IN_SYNC:
            self.in_sync = {}
        self.in_sync[subscription] = send

    def leave_in_sync(self, subscription: Any) -> None:
        """``subscription`` is no longer in sync here (it may not have been)."""
        if self.lone is subscription:
            self.lone = None
            self.lone_send = None
        elif self.in_sync:
            self.in_sync.pop(subscription, None)

    def in_sync_members(self) -> list[Any]:
        """The subscriptions in sync here (of this topic only)."""
        lone = self.lone
        return [*self.in_sync] if lone is None else [lone, *self.in_sync]

    def join_multi(self, subscription: Any, send: Callable[[Any], Any]) -> None:
        """``subscription`` (of several topics) is in sync here."""
        if self.in_sync_multi is _NO_MULTI:
            self.in_sync_multi = {}
        self.in_sync_multi[subscription] = send

    def join_catching_up(self, subscription: Any) -> None:
        """``subscription`` writes its backlog here from its own cursor."""
        if self.catching_up is _NO_CATCHING_UP:
            self.catching_up = {}
        self.catching_up[subscription] = None

    def members(self) -> Iterator[Any]:
        """Its subscriptions that have started, in every set."""
        lone = () if self.lone is None else (self.lone,)
        coded = () if self.coded is None else self.coded
        return itertools.chain(lone, self.in_sync, self.in_sync_multi, self.catching_up, coded)

    @property
    def has_history(self) -> bool:
        """Whether the topic has its own ring (it was published to), not ``NO_HISTORY``."""
        return self.ring is not NO_HISTORY

    @property
    def evicted_up_to(self) -> int:
        """The floor: the newest position this topic no longer holds (read-only: moved by
        ``raise_floor`` and ``forget_oldest``)."""
        return self._floor

    def raise_floor(self, position: int) -> None:
        """What this topic can vouch for starts after ``position`` (a broker's floor,
        a break's marker): the floor rises to it, never falls."""
        if position > self._floor:
            self._floor = position

    @property
    def newest_position(self) -> int:
        """The position of the newest frame this topic ever held (or its floor)."""
        return self._positions[-1] if self._positions else self._floor

    @property
    def positions(self) -> list[int]:
        """The position of each retained frame, oldest first (a copy)."""
        return list(self._positions)

    def trim(self, max_bytes: int) -> int:
        """Evict the oldest frames until at most ``max_bytes`` of data remain;
        how many frames went."""
        oldest = self.ring.oldest
        evicted = self.ring.trim(max_bytes)
        self.forget_oldest(self.ring.oldest - oldest)
        return evicted

    def forget_oldest(self, count: int) -> None:
        """The ring evicted its ``count`` oldest frames: drop their positions, and
        raise the floor past them (max: a broker may have raised it further)."""
        positions = self._positions
        if not 0 <= count <= len(positions):
            raise IndexError(f"cannot forget {count} of {len(positions)} positions")
        floor = self._floor
        for _ in range(count):
            floor = max(floor, positions.popleft())
        self._floor = floor

    def lagging(self) -> list[Any]:
        """Catching-up subscriptions whose cursor here (``.cursors``) fell behind the ring."""
        limit = self.ring.oldest - 1
        return [s for s in self.catching_up if s.cursors.get(self, limit) < limit]

    def position_at(self, cursor: int) -> int:
        """The position of the retained frame at ring cursor ``cursor``."""
        index = cursor - self.ring.oldest
        if not 0 <= index < len(self._positions):
            raise IndexError(f"no retained frame at cursor {cursor}")
        return self._positions[index]

    def cursor_after(self, position: int) -> int:
        """Cursor just after the last retained frame at or before ``position``."""
        low, high = self.ring.oldest, self.ring.head
        # the first retained cursor whose position is later; ours is the one before
        while low <= high:
            middle = (low + high) // 2
            if self.position_at(middle) <= position:
                low = middle + 1
            else:
                high = middle - 1
        return low - 1


class TopicTable:
    """The topics of one hub by name, their rings' accounting, and the per-event
    store and flush (see the module doc). ``over_budget`` and ``get`` are the
    subclass's."""

    __slots__ = (
        "_last_position",
        "by_name",
        "by_write",
        "history_budget",
        "retained_bytes",
        "retained_frames",
        "ring_max_bytes",
        "ring_max_frames",
        "trimmed",
        "with_history",
    )

    def __init__(
        self, ring_max_frames: int, ring_max_bytes: int, history_budget: int, last_position: int = 0
    ) -> None:
        self.by_name: dict[str, Topic] = {}
        self.ring_max_frames = ring_max_frames
        self.ring_max_bytes = ring_max_bytes
        #: the budget of all topics' history (bytes), and what they hold now
        self.history_budget = history_budget
        self.retained_bytes = 0  # frame data
        self.retained_frames = 0
        self.with_history = 0
        # the newest position stored here or skipped to (or given as its start)
        self._last_position = last_position
        #: topics with history, the one written to longest ago first
        self.by_write: dict[Topic, None] = {}
        #: topics whose frames the budget evicted, for the caller to check for lag
        self.trimmed: list[Topic] = []

    @property
    def last_position(self) -> int:
        """The newest position applied here: stored, skipped to, or the start (see the
        module doc); read-only (``store`` and ``skip_to`` move it)."""
        return self._last_position

    def get(self, name: str, now: float) -> Topic:
        """The topic ``name``, created if it does not exist (the subclass's)."""
        raise NotImplementedError

    def skip_to(self, position: int) -> None:
        """Positions up to ``position`` are past here without events stored (see the
        module doc): the newest applied position rises to it, never falls."""
        if position > self._last_position:
            self._last_position = position

    def over_budget(self) -> None:
        """Evict history until it fits ``history_budget`` again (the subclass's)."""
        raise NotImplementedError

    def keep(self, topic: Topic, frame: bytes, event_id: str, position: int) -> int:
        """Store one frame in ``topic`` (its ring made with its first frame), with
        its position; how many of the topic's own older frames that evicted.
        Over the budget, ``over_budget`` runs."""
        ring = topic.ring
        if ring is NO_HISTORY:
            ring = topic.ring = Ring(self.ring_max_frames, self.ring_max_bytes)
            topic._positions = deque()
            self.with_history += 1
        data = ring.nbytes
        oldest = ring.oldest
        # an id that is the position's own is not indexed: resuming finds it by position
        ring.publish(frame, None if event_id == str(position) else event_id)
        evicted = ring.oldest - oldest
        if evicted:
            topic.forget_oldest(evicted)
        topic._positions.append(position)
        topic.published += 1
        self.retained_bytes += ring.nbytes - data
        self.retained_frames += 1 - evicted
        by_write = self.by_write
        by_write.pop(topic, None)
        by_write[topic] = None
        if self.retained_bytes + FRAME_OVERHEAD * self.retained_frames > self.history_budget:
            self.over_budget()
        return evicted

    def store(
        self,
        items: list[Any],
        start: int,
        now: float,
        dirty: dict[Topic, None],
        accepted: list[list[Any]],
    ) -> tuple[int, Topic | None]:
        """Store ``items[start:]``; ``(index to go on from, topic to check for lag
        or None)`` (see the module doc)."""
        by_name = self.by_name
        last_position = self._last_position
        try:
            for index in range(start, len(items)):
                position, event_id, names, frame, accepted_at = items[index]
                if position > last_position:
                    last_position = position
                    # events accepted together share their time: one entry a run
                    if accepted and accepted[-1][0] == accepted_at:
                        accepted[-1][1] += 1
                    else:
                        accepted.append([accepted_at, 1])
                for name in names:
                    topic = by_name.get(name)
                    if topic is None:
                        topic = self.get(name, now)
                    else:
                        topic.last_activity = now
                    positions = topic._positions
                    if position <= (positions[-1] if positions else topic._floor):
                        continue  # already stored
                    evicted = self.keep(topic, frame, event_id, position)
                    dirty[topic] = None
                    if evicted and topic.catching_up:
                        return index, topic
                    if self.trimmed:
                        return index, None
        finally:  # what was stored before an error counts
            self._last_position = last_position
        return len(items), None

    def flush(
        self, dirty: dict[Topic, None], written_type: type, template: dict[str, Any]
    ) -> tuple[
        int, list[tuple[Any, Any]], list[Any], list[tuple[Topic, int]], dict[Topic, int] | None
    ]:
        """Write each dirty topic's new frames to its in-sync streams; ``(delivered,
        slow, failed, lagged, multi)`` (see the module doc)."""
        delivered = 0
        slow: list[tuple[Any, Any]] = []
        failed: list[Any] = []
        lagged: list[tuple[Topic, int]] = []
        multi: dict[Topic, int] | None = None
        for topic in dirty:
            start = topic.flushed
            if topic.in_sync_multi or topic.coded is not None:
                if multi is None:
                    multi = {}
                multi[topic] = start
            ring = topic.ring
            count = ring.head - start
            if count <= 0:
                continue
            topic.flushed = ring.head
            try:
                data, _ = ring.read_since(start)
            except Lagged as lag:  # more stored in one go than the ring holds
                lagged.append((topic, lag.lost))
                continue
            message = None
            send = topic.lone_send
            if send is not None:
                message = dict(template)
                message["body"] = data
                try:
                    result = send(message)
                except Exception:  # a server whose send() raises for a gone client
                    failed.append(topic.lone)
                else:
                    if type(result) is not written_type:
                        slow.append((topic.lone, result))
                    delivered += count
            if topic.in_sync:
                if message is None:
                    message = dict(template)
                    message["body"] = data
                for subscription, send in topic.in_sync.items():
                    try:
                        result = send(message)
                    except Exception:
                        failed.append(subscription)
                        continue
                    if type(result) is not written_type:
                        slow.append((subscription, result))
                    delivered += count
        return delivered, slow, failed, lagged, multi


def send_each(
    targets: dict[Any, Callable[[Any], Any]],
    message: Any,
    written_type: type,
    slow: list[tuple[Any, Any]],
    failed: list[Any],
) -> int:
    """Call each target's ``send`` with ``message``; pending writes go to ``slow`` as
    ``(subscription, result)``, sends that raise to ``failed``; how many were sent."""
    sent = 0
    for subscription, send in targets.items():
        try:
            result = send(message)
        except Exception:
            failed.append(subscription)
            continue
        sent += 1
        if type(result) is not written_type:
            slow.append((subscription, result))
    return sent
