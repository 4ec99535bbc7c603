"""Storage: topics, their rings, and where each retained frame sits in the order.

A topic exists while it has subscribers or history. It gets its ``Ring`` of
encoded frames with its first event, and keeps the position of each retained
frame beside it (``positions``); until then it costs a few hundred bytes and
goes with its last subscriber. Only topics with history count against
``max_topics``; an idle one is swept after ``topic_ttl``, remembering how far it
went, so that a ``Last-Event-ID`` from its past resolves to ``evicted`` rather
than ``unknown``.

All topics' history together stays within ``history_budget`` bytes (frame
data plus ``FRAME_OVERHEAD`` per frame, the objects that hold it): a store that
passes it trims the history of the topics written to longest ago, oldest frames
first, as their own rings would (``Ring.trim``). What a trim cost shows as it
does for a ring's own eviction: a resume into it is ``evicted``, a subscription
still catching up there ends ``lagged``; a trimmed topic nobody subscribes to is
dropped, remembering how far it went. Evicting rather than refusing publishes:
one publisher filling the budget then costs the oldest history, not every other
publisher's service.

A topic's subscriptions are in one of three sets (dicts used as ordered sets:
an empty dict is a third of an empty set): in sync (subscribed to this topic
only, at its flushed position: they share one message per flush), held as
``lone`` (the first of them: a topic per user has just that one, and no dict
of 224 bytes for it) and ``in_sync`` (the others); ``in_sync_multi`` (in sync,
subscribed to several topics: they get a merge per topic set) and
``catching_up`` (writing their backlog from the ring, each at its own cursor).
Until a topic has a member of a set, the set is a shared empty dict that is
never written to. See ``_fanout.py``.

The per-event work is native: the ``Topic`` objects, storing a batch of events
(``TopicTable.store``, which hands back to the fan-out when a store evicted
frames a stream is catching up in or the budget trimmed topics) and the
flush's writes (``TopicTable.flush``) are ``sse_fast/_core``'s (``topic_py.py``
holds their theory of operation, ``src_ext/topic_ext.pyx`` the Cython twin).
``Topics`` adds what is not per event: creating and dropping topics, the
budget's eviction order, the figures.

The newest position the hub applied (``last_position``: what a resume may
claim, a new stream's first id) is the table's alone: it starts just before the
broker's ``first_position`` (``Hub``), rises as events are stored, and with
``skip_to`` where positions pass without events here (``Hub.start``: the broker
joined a running sequence; ``_breaks.py``: a break's marker no topic needs).
Everyone else reads it; the native attribute is read-only.

With a broker of several partitions (``Broker.partitions``) each topic has its
partition (``Topic.partition``, given here at its creation) and positions are
comparable within a partition only. The newest applied position is then kept
per partition too, by ``Topics`` alone (``last_position_of``; ``applied`` raises
it after each store, ``skip_to_in`` for positions passed without events), and so
is the floor of forgotten topics. The native ``last_position`` is then the
newest of any partition: a figure, never a resume decision. With one partition
none of this runs: the store is the native one alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from .._core import FRAME_OVERHEAD, NO_HISTORY, Topic, TopicTable
from ..publishing import PublishError, PublishRequest
from ..settings import StreamSettings
from ..settings._memory import history_budget
from ._cursor import REST, format_cursor, with_id
from ._matching import pattern_matches

__all__ = [
    "FRAME_OVERHEAD",
    "NO_HISTORY",
    "Topic",
    "Topics",
    "merge_frames",
    "read_since",
    "with_cursors",
]


def read_since(
    cursors: dict[Topic, int], places: dict[int, int] | None = None
) -> tuple[bytes, int]:
    """Everything newer than ``cursors`` (advanced in place), and how many events.

    One topic: one coalesced ring read. Several: frames merged in order of
    position, an event published to several of the topics written once.
    Raises ``Lagged`` when a cursor fell behind its ring. ``places``: the
    stream's position in each partition, when its topics span several
    (``merge_frames``, ``with_cursors``).
    """
    if places is not None:
        merged = merge_frames(cursors)
        return with_cursors(merged, places), len(merged)
    if len(cursors) == 1:
        ((topic, cursor),) = cursors.items()
        data, cursors[topic] = topic.ring.read_since(cursor)
        return data, cursors[topic] - cursor
    entries: dict[int, bytes] = {}
    for topic, cursor in cursors.items():
        frames = topic.ring.read_frames(cursor)
        for offset, frame in enumerate(frames, start=cursor + 1):
            entries.setdefault(topic.position_at(offset), frame)
        cursors[topic] = cursor + len(frames)
    if len(entries) == 1:
        return next(iter(entries.values())), 1
    return b"".join(entries[p] for p in sorted(entries)), len(entries)


def merge_frames(
    cursors: dict[Topic, int],
) -> list[tuple[int, int, bytes, tuple[tuple[int, int], ...]]]:
    """The frames newer than ``cursors`` (advanced in place) of topics of several
    partitions, as ``(position, partition, frame, copies)`` in order of position
    within each partition (the order between partitions means nothing); an event of
    several of the topics of one partition once. ``copies``: ``(partition,
    position)`` of the same event (same id, same frame without its id line) held
    by a topic of another partition of ``cursors`` (an event spanning partitions
    is stored in each: ``with_cursors`` writes it once). Raises ``Lagged`` as
    ``read_since`` does."""
    entries: dict[tuple[int, int], bytes] = {}
    for topic, cursor in cursors.items():
        frames = topic.ring.read_frames(cursor)
        partition = topic.partition
        for offset, frame in enumerate(frames, start=cursor + 1):
            entries.setdefault((topic.position_at(offset), partition), frame)
        cursors[topic] = cursor + len(frames)
    return [
        (position, partition, frame, _copies(cursors, position, partition, frame))
        for position, partition in sorted(entries)
        for frame in (entries[position, partition],)
    ]


def _event_id(frame: bytes) -> str | None:
    """The id of one encoded event, or None (see ``with_id``)."""
    if frame.startswith(b"id:"):
        start = 3
    else:
        start = frame.find(b"\nid:")
        if start < 0:
            return None
        start += 4
    text = frame[start : frame.index(b"\n", start)]
    return (text[1:] if text.startswith(b" ") else text).decode("utf-8", "surrogateescape")


def _copies(
    topics: dict[Topic, int], position: int, partition: int, frame: bytes
) -> tuple[tuple[int, int], ...]:
    """Where topics of partitions other than ``partition`` hold the event ``frame``
    (at ``position``) too: ``(partition, position)`` each."""
    event_id = _event_id(frame)
    if event_id is None or event_id == str(position):
        return ()
    body = None
    found = []
    for topic in topics:
        if topic.partition == partition or not topic.has_history:
            continue
        cursor = topic.ring.resume(event_id)
        if cursor is None or cursor < topic.ring.oldest:
            continue
        if body is None:
            body = with_id(frame, b"")
        if with_id(topic.ring.read_frames(cursor - 1)[0], b"") == body:
            found.append((topic.partition, topic.position_at(cursor)))
    return tuple(found)


def with_cursors(
    entries: list[tuple[int, int, bytes, tuple[tuple[int, int], ...]]],
    places: dict[int, int],
    rest: int = 0,
) -> bytes:
    """``entries`` (``merge_frames``) for a stream at ``places`` (partition ->
    position, moved in place): each frame with the stream's cursor after it as
    its id (``_cursor.py``). A frame whose event the stream was already written
    from another partition (a copy at or before the stream's place there) is
    not written again; its partition's place still moves past it.

    A pattern stream's places have a rest (``REST``): a partition it gains a topic
    of is listed from just before its first frame here, and the rest rises to
    ``rest`` (``Broker.complete_up_to``, taken when the frames were stored)."""
    if REST in places:
        for position, partition, _, _ in entries:
            if partition not in places:
                places[partition] = position - 1
        if rest > places[REST]:
            places[REST] = rest
    out = []
    for position, partition, frame, copies in entries:
        places[partition] = position
        if copies and any(at <= places.get(other, -1) for other, at in copies):
            continue
        out.append(with_id(frame, b"id: %s\n" % format_cursor(places).encode()))
    return b"".join(out)


class Topics(TopicTable):
    """The topics of one hub, by name: created on first use, dropped when idle.

    The per-event store and flush, the rings' accounting and the topic objects
    are the native core's (``TopicTable``, ``Topic``: ``sse_fast/_core/topic_py.py``
    holds their theory of operation); creating and dropping topics and the
    budget's eviction order are here."""

    def __init__(
        self,
        settings: StreamSettings,
        last_position: int = 0,
        partition_of: Callable[[str], int] | None = None,
        starts: Sequence[int] = (),
        on_drop: Callable[[str], None] | None = None,
        *,
        budget: int | None = None,
    ) -> None:
        """``last_position``: where the newest applied position starts. With several
        partitions, ``partition_of`` names a topic's and ``starts`` gives each
        partition's start (its length is the number of partitions). ``on_drop`` is
        told the name of each dropped topic (the broker stops delivering it).
        ``budget``: the bytes of history this worker keeps (``history_budget``; when
        not given, one worker's)."""
        super().__init__(
            settings.ring_max_frames,
            settings.ring_max_bytes,
            history_budget(settings, 1)[0] if budget is None else budget,
            max(starts, default=last_position),
        )
        self.settings = settings
        self.budget_evicted = 0  # frames the budget evicted (metric)
        #: how many partitions the broker has (1: no per-partition bookkeeping)
        self.partitions = max(1, len(starts))
        self._partition_of = partition_of if self.partitions > 1 else None
        # with several partitions: the newest applied position of each
        self._partition_positions = list(starts)
        self._swept: dict[str, int] = {}  # name -> newest position, of dropped topics
        # positions of topics forgotten at or below it, per partition
        self._swept_floors = [0] * self.partitions
        self.on_drop = on_drop

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str, now: float) -> Topic:
        """The topic ``name``, created (without history) if it does not exist."""
        topic = self.by_name.get(name)
        if topic is None:
            if self._partition_of is None:
                floor = max(self._swept.pop(name, 0), self._swept_floors[0])
                topic = self.by_name[name] = Topic(name, floor, now)
            else:
                partition = self._partition_of(name)
                floor = max(self._swept.pop(name, 0), self._swept_floors[partition])
                topic = self.by_name[name] = Topic(name, floor, now, partition)
        topic.last_activity = now
        return topic

    def partition_of(self, name: str) -> int:
        """The partition of topic ``name`` (the broker's rule; 0 with one)."""
        return 0 if self._partition_of is None else self._partition_of(name)

    def last_position_of(self, partition: int) -> int:
        """The newest position applied in ``partition`` (see the module doc)."""
        if self.partitions == 1:
            return self.last_position
        return self._partition_positions[partition]

    def skip_to_in(self, partition: int, position: int) -> None:
        """``skip_to`` in one partition: its newest applied position rises to
        ``position``, never falls."""
        self.skip_to(position)
        if self.partitions > 1 and position > self._partition_positions[partition]:
            self._partition_positions[partition] = position

    def applied(self, items: Sequence[Any], accepted: list[list[Any]]) -> None:
        """With several partitions: raise each partition's newest applied position
        to the events just stored (``FanOut.apply``, after ``store``), and count
        those new in their partition in ``accepted`` as ``store`` does with one
        (``[accepted_at, count]`` per run: the latency metric)."""
        positions = self._partition_positions
        by_name = self.by_name
        for position, _, names, _, accepted_at in items:
            new = False
            for name in names:
                topic = by_name.get(name)  # None: the budget dropped it already
                partition = self.partition_of(name) if topic is None else topic.partition
                if position > positions[partition]:
                    positions[partition] = position
                    new = True
            if new:
                if accepted and accepted[-1][0] == accepted_at:
                    accepted[-1][1] += 1
                else:
                    accepted.append([accepted_at, 1])

    def keep_to_budget(self) -> None:
        """Evict what is over the budget now (after frames were flushed that
        could not be evicted while they were not)."""
        if self.retained_bytes + FRAME_OVERHEAD * self.retained_frames > self.history_budget:
            self.over_budget()

    def over_budget(self) -> None:
        """Evict the history written to longest ago, oldest frame first, until all
        of it fits the budget again. Frames not yet flushed to subscribers stay
        (the one just stored among them): over the budget by one publish at most.
        Only the topics at the front are looked at (a topic whose frames all went
        leaves the order until it is written again): O(1) per publish once full."""
        excess = self.retained_bytes + FRAME_OVERHEAD * self.retained_frames - self.history_budget
        emptied: list[Topic] = []
        for topic in self.by_write:  # nothing is added or removed until the loop ends
            if excess <= 0:
                break
            ring = topic.ring
            unflushed = ring.head - max(topic.flushed, ring.oldest - 1)
            gone = 0
            while excess > 0 and len(ring) > unflushed and ring.nbytes:
                data = ring.nbytes
                evicted = topic.trim(data - 1)  # the oldest frame (and empty ones before it)
                freed = data - ring.nbytes
                excess -= freed + FRAME_OVERHEAD * evicted
                self.retained_bytes -= freed
                gone += evicted
            if gone:
                self.retained_frames -= gone
                self.budget_evicted += gone
                self.trimmed.append(topic)
            if not len(ring):
                emptied.append(topic)
        for topic in emptied:
            if topic.subscribers:
                del self.by_write[topic]  # back in the order with its next frame
            else:
                self.drop(topic)

    def check_room(self, requests: Sequence[PublishRequest]) -> None:
        """Refuse a publish that would give more than ``max_topics`` topics a
        history. Subscribing never counts: a topic without history costs a few
        hundred bytes and vanishes with its last subscriber."""
        room = self.settings.max_topics - self.with_history
        if len(requests) == 1:
            if len(requests[0].topics) <= room:
                return  # cannot exceed it (the common case, checked without a set)
        elif sum(len(request.topics) for request in requests) <= room:
            return  # a batch naming no more topics than there is room for
        by_name = self.by_name
        new = {
            name
            for request in requests
            for name in request.topics
            if name not in by_name or not by_name[name].has_history
        }
        if self.with_history + len(new) > self.settings.max_topics:
            raise PublishError(
                f"topic limit reached ({self.settings.max_topics} topics with history); "
                "publish to existing topics or raise max_topics",
                status=503,
            )

    def unsubscribed(self, topic: Topic, now: float) -> None:
        """A subscription left ``topic``: a topic without history goes with its last one."""
        topic.last_activity = now
        if not topic.subscribers and not topic.has_history:
            self.drop(topic)

    def sweep(self, now: float) -> int:
        """Drop idle topics (no subscriber, no activity for ``topic_ttl``)."""
        cutoff = now - self.settings.topic_ttl
        idle = [
            topic
            for topic in self.by_name.values()
            if not topic.subscribers and topic.last_activity < cutoff
        ]
        for topic in idle:
            self.drop(topic)
        return len(idle)

    def drop(self, topic: Topic) -> None:
        """Forget a topic nobody subscribes to, remembering how far it went."""
        if self.by_name.get(topic.name) is not topic:
            return
        del self.by_name[topic.name]
        if self.on_drop is not None:
            self.on_drop(topic.name)
        if topic.has_history:
            self.with_history -= 1
            self.retained_bytes -= topic.ring.nbytes
            self.retained_frames -= len(topic.ring)
            self.by_write.pop(topic, None)
        newest = topic.newest_position
        floors = self._swept_floors
        if newest > floors[topic.partition]:
            self._swept[topic.name] = newest
        while len(self._swept) > self.settings.max_topics:
            oldest = next(iter(self._swept))
            position = self._swept.pop(oldest)
            # the partition of a topic no longer held, from the broker's rule again
            partition = 0 if self._partition_of is None else self._partition_of(oldest)
            floors[partition] = max(floors[partition], position)

    def forgotten_by(
        self, patterns: Sequence[str], gone_up_to: int = 0
    ) -> Callable[[int], tuple[dict[str, int], bool]]:
        """For a stream of topic ``patterns`` resuming after a position: the dropped
        topics they match with events after it (name -> the newest position they
        had), and whether topics forgotten by name had positions after it
        (``_resume.Forgotten``), or topics the broker may have lost without trace up
        to ``gone_up_to`` (``Expansion``) did. Presence companions are never matched."""

        def forgotten(target: int) -> tuple[dict[str, int], bool]:
            gone = {
                name: newest
                for name, newest in self._swept.items()
                if newest > target and pattern_matches(name, patterns)
            }
            unnamed = target < gone_up_to or any(f > target for f in self._swept_floors)
            return gone, unnamed

        return forgotten

    def forgotten_over(
        self, patterns: Sequence[str]
    ) -> Callable[[Callable[[int], int]], tuple[dict[str, int], bool]]:
        """``forgotten_by`` over several partitions: given the position a stream of
        ``patterns`` resumes after in each partition, the dropped topics they match with
        events after it, and whether topics forgotten by name had some
        (``_resume.PatternsOver``)."""
        of = self._partition_of or (lambda name: 0)

        def forgotten(after: Callable[[int], int]) -> tuple[dict[str, int], bool]:
            gone = {
                name: newest
                for name, newest in self._swept.items()
                if newest > after(of(name)) and pattern_matches(name, patterns)
            }
            floors = self._swept_floors
            return gone, any(floor > after(p) for p, floor in enumerate(floors) if floor)

        return forgotten

    def budget_figures(self) -> dict[str, int]:
        """The history budget and its use (``/stats``, ``/metrics``)."""
        return {
            "history_budget_bytes": self.history_budget,
            "history_bytes": self.retained_bytes + FRAME_OVERHEAD * self.retained_frames,
            "history_budget_evicted": self.budget_evicted,
        }

    def page(self, offset: int, limit: int) -> dict[str, dict[str, Any]]:
        """Figures of the topics ``offset`` to ``offset + limit`` (``/stats``)."""
        return {
            name: {
                "subscribers": topic.subscribers,
                "published": topic.published,
                "retained": len(topic.ring),
                "retained_bytes": topic.ring.nbytes,
                "evicted": topic.ring.evicted,
            }
            for name, topic in itertools.islice(self.by_name.items(), offset, offset + limit)
        }

    def busiest(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` topics with the most subscriptions (``/metrics``)."""
        return sorted(
            ((name, t.subscribers) for name, t in self.by_name.items() if t.subscribers),
            key=lambda item: -item[1],
        )[:count]
