"""Storage: topics, their rings, and where each retained frame sits in the order.

A topic exists while it has subscribers or history. It gets its ``Ring`` of
encoded frames with its first event, and keeps the position of each retained
frame beside it (``positions``); until then it costs a few hundred bytes and
goes with its last subscriber. Only topics with history count against
``max_topics``; an idle one is swept after ``topic_ttl``, remembering how far it
went, so that a ``Last-Event-ID`` from its past resolves to ``evicted`` rather
than ``unknown``.

A topic's subscriptions are in one of three sets (dicts used as ordered sets:
an empty dict is a third of an empty set): ``in_sync`` (subscribed to this
topic only, at its flushed position: they share one message per flush),
``in_sync_multi`` (in sync, subscribed to several topics: they get a merge per
topic set) and ``catching_up`` (writing their backlog from the ring, each at
its own cursor). See ``fanout.py``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._core import Ring
from ..brokers.sequencing import Sequenced
from ..publishing import PublishError, PublishRequest
from ..settings import Settings

if TYPE_CHECKING:
    from ..asgi import Send
    from .subscription import Subscription

# The ring of every topic that has no history yet: empty, never written to (a
# topic gets its own ring with its first event), so subscribing to a new name
# costs no history memory.
NO_HISTORY = Ring(1, 1)
NO_POSITIONS: deque[int] = deque(maxlen=0)


class Topic:
    """One topic: its ring (from its first event on), the position of each
    retained frame, and its subscriptions."""

    __slots__ = (
        "catching_up",
        "evicted_up_to",
        "flushed",
        "in_sync",
        "in_sync_multi",
        "last_activity",
        "name",
        "positions",
        "published",
        "ring",
        "settings",
        "subscriptions",
    )

    def __init__(self, name: str, settings: Settings, evicted_up_to: int, now: float) -> None:
        self.name = name
        self.settings = settings
        self.ring = NO_HISTORY
        self.positions: deque[int] = NO_POSITIONS  # of each retained frame, oldest first
        # the newest position this topic no longer holds (evicted, or swept with it)
        self.evicted_up_to = evicted_up_to
        self.in_sync: dict[Subscription, Send] = {}
        self.in_sync_multi: dict[Subscription, Send] = {}
        self.flushed = 0  # ring cursor in-sync subscriptions have been written up to
        self.subscriptions: dict[Subscription, None] = {}
        self.catching_up: dict[Subscription, None] = {}
        self.published = 0
        self.last_activity = now

    @property
    def has_history(self) -> bool:
        return self.ring is not NO_HISTORY

    @property
    def newest_position(self) -> int:
        """The position of the newest frame this topic ever held (or its floor)."""
        return self.positions[-1] if self.positions else self.evicted_up_to

    def store(self, item: Sequenced) -> bool:
        """Keep one frame; True when it evicted older frames."""
        ring = self.ring
        if ring is NO_HISTORY:
            ring = self.ring = Ring(self.settings.ring_max_frames, self.settings.ring_max_bytes)
            self.positions = deque()
        oldest = ring.oldest
        ring.publish(item.frame, item.id)
        evicted = ring.oldest - oldest
        positions = self.positions
        for _ in range(evicted):
            # max: a broker may have raised the floor past what the ring held
            self.evicted_up_to = max(self.evicted_up_to, positions.popleft())
        positions.append(item.position)
        self.published += 1
        return evicted > 0

    def lagging(self) -> list[Subscription]:
        """Catching-up subscriptions whose cursor here fell behind the ring."""
        limit = self.ring.oldest - 1
        return [s for s in self.catching_up if s.cursors.get(self, limit) < limit]

    def position_at(self, cursor: int) -> int:
        """The position of the retained frame at ring cursor ``cursor``."""
        return self.positions[cursor - self.ring.oldest]

    def cursor_after(self, position: int) -> int:
        """Cursor just after the last retained frame at or before ``position``."""
        low, high = self.ring.oldest, self.ring.head
        # Find the first retained cursor whose position is later; ours is the one before.
        while low <= high:
            middle = (low + high) // 2
            if self.position_at(middle) <= position:
                low = middle + 1
            else:
                high = middle - 1
        return low - 1


def read_since(cursors: dict[Topic, int]) -> tuple[bytes, int]:
    """Everything newer than ``cursors`` (advanced in place), and how many events.

    One topic: one coalesced ring read. Several: frames merged in order of
    position, an event published to several of the topics written once.
    Raises ``Lagged`` when a cursor fell behind its ring.
    """
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


class Topics:
    """The topics of one hub, by name: created on first use, dropped when idle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.by_name: dict[str, Topic] = {}
        self.with_history = 0
        self._swept: dict[str, int] = {}  # name -> newest position, of dropped topics
        self._swept_floor = 0  # positions of topics forgotten beyond that
        #: told the name of each dropped topic (the broker stops delivering it)
        self.on_drop: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str, now: float) -> Topic:
        """The topic ``name``, created (without history) if it does not exist."""
        topic = self.by_name.get(name)
        if topic is None:
            floor = max(self._swept.pop(name, 0), self._swept_floor)
            topic = self.by_name[name] = Topic(name, self.settings, floor, now)
        topic.last_activity = now
        return topic

    def keep(self, topic: Topic, item: Sequenced) -> bool:
        """Store ``item`` in ``topic``; True when that evicted older frames."""
        if topic.ring is NO_HISTORY:
            self.with_history += 1
        return topic.store(item)

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
        if not topic.subscriptions and not topic.has_history:
            self.drop(topic)

    def sweep(self, now: float) -> int:
        """Drop idle topics (no subscriber, no activity for ``topic_ttl``)."""
        cutoff = now - self.settings.topic_ttl
        idle = [
            topic
            for topic in self.by_name.values()
            if not topic.subscriptions and topic.last_activity < cutoff
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
        newest = topic.newest_position
        if newest > self._swept_floor:
            self._swept[topic.name] = newest
        while len(self._swept) > self.settings.max_topics:
            oldest = next(iter(self._swept))
            self._swept_floor = max(self._swept_floor, self._swept.pop(oldest))

    def page(self, offset: int, limit: int) -> dict[str, dict[str, Any]]:
        """Figures of the topics ``offset`` to ``offset + limit`` (``/stats``)."""
        return {
            name: {
                "subscribers": len(topic.subscriptions),
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
            ((name, len(t.subscriptions)) for name, t in self.by_name.items() if t.subscriptions),
            key=lambda item: -item[1],
        )[:count]
