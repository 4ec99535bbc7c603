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
never written to. See ``fanout.py``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._core import Ring
from ..brokers.sequencing import Sequenced
from ..publishing import PublishError, PublishRequest
from ..settings import Settings, history_budget

if TYPE_CHECKING:
    from ..asgi import Send
    from .subscription import Subscription

__all__ = [
    "FRAME_OVERHEAD",
    "NO_HISTORY",
    "NO_POSITIONS",
    "Topic",
    "Topics",
    "read_since",
]

# The ring of every topic that has no history yet: empty, never written to (a
# topic gets its own ring with its first event), so subscribing to a new name
# costs no history memory.
#: the shared empty ring of every topic without history yet (never written to)
NO_HISTORY = Ring(1, 1)
#: the shared empty ``positions`` of every topic without history yet
NO_POSITIONS: deque[int] = deque(maxlen=0)
#: bytes counted per retained frame beside its data (the bytes object's header,
#: its slots in the ring, its position in ``positions``, its id and index entry):
#: 219 measured with tracemalloc (tests/hub/test_topics.py checks it is no more),
#: and room for slots not yet filled (a ring's slots double as it fills)
FRAME_OVERHEAD = 320
# A topic's sets of subscriptions in sync (besides ``lone``), in sync with several topics
# and catching up, until it has a first one (``Topic.join_in_sync``, ``join_multi``,
# ``join_catching_up``): never written to.
_NO_IN_SYNC: dict[Subscription, Send] = {}
_NO_MULTI: dict[Subscription, Send] = {}
_NO_CATCHING_UP: dict[Subscription, None] = {}


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
        "lone",
        "name",
        "positions",
        "published",
        "ring",
        "subscribers",
    )

    def __init__(self, name: str, evicted_up_to: int, now: float) -> None:
        self.name = name
        self.ring = NO_HISTORY
        self.positions: deque[int] = NO_POSITIONS  # of each retained frame, oldest first
        # the newest position this topic no longer holds (evicted, or swept with it)
        self.evicted_up_to = evicted_up_to
        #: the first subscription in sync here (of this topic only), None when none is
        self.lone: Subscription | None = None
        #: the other ones in sync here, with their ``send``
        self.in_sync: dict[Subscription, Send] = _NO_IN_SYNC
        # the shared empty sets until a first member (most topics never get one)
        self.in_sync_multi: dict[Subscription, Send] = _NO_MULTI
        self.flushed = 0  # ring cursor in-sync subscriptions have been written up to
        #: how many subscriptions have this topic, from ``open_stream`` to ``leave_topics``
        self.subscribers = 0
        self.catching_up: dict[Subscription, None] = _NO_CATCHING_UP
        self.published = 0
        self.last_activity = now

    def join_in_sync(self, subscription: Subscription) -> None:
        """``subscription`` (of this topic only) is in sync here."""
        if self.lone is None:
            self.lone = subscription
            return
        if self.in_sync is _NO_IN_SYNC:
            self.in_sync = {}
        self.in_sync[subscription] = subscription.send

    def leave_in_sync(self, subscription: Subscription) -> None:
        """``subscription`` is no longer in sync here (it may not have been)."""
        if self.lone is subscription:
            self.lone = None
        elif self.in_sync:
            self.in_sync.pop(subscription, None)

    def in_sync_members(self) -> list[Subscription]:
        """The subscriptions in sync here (of this topic only)."""
        lone = self.lone
        return [*self.in_sync] if lone is None else [lone, *self.in_sync]

    def join_multi(self, subscription: Subscription) -> None:
        """``subscription`` (of several topics) is in sync here."""
        if self.in_sync_multi is _NO_MULTI:
            self.in_sync_multi = {}
        self.in_sync_multi[subscription] = subscription.send

    def join_catching_up(self, subscription: Subscription) -> None:
        """``subscription`` writes its backlog here from its own cursor."""
        if self.catching_up is _NO_CATCHING_UP:
            self.catching_up = {}
        self.catching_up[subscription] = None

    def members(self) -> Iterator[Subscription]:
        """Its subscriptions that have started (each is in one of the three sets; a
        stream whose response start is still pending is counted in ``subscribers``
        only)."""
        lone = () if self.lone is None else (self.lone,)
        return itertools.chain(lone, self.in_sync, self.in_sync_multi, self.catching_up)

    @property
    def has_history(self) -> bool:
        """Whether the topic has its own ring (it was published to), not ``NO_HISTORY``."""
        return self.ring is not NO_HISTORY

    @property
    def newest_position(self) -> int:
        """The position of the newest frame this topic ever held (or its floor)."""
        return self.positions[-1] if self.positions else self.evicted_up_to

    def trim(self, max_bytes: int) -> int:
        """Evict the oldest frames until at most ``max_bytes`` of data remain
        (the history budget); how many frames went."""
        oldest = self.ring.oldest
        evicted = self.ring.trim(max_bytes)
        self.forget_oldest(self.ring.oldest - oldest)
        return evicted

    def forget_oldest(self, count: int) -> None:
        """The ring evicted its ``count`` oldest frames: drop their positions, and
        raise the floor past them (max: a broker may have raised it further)."""
        positions = self.positions
        floor = self.evicted_up_to
        for _ in range(count):
            floor = max(floor, positions.popleft())
        self.evicted_up_to = floor

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
        #: the budget of all topics' history (bytes), and what they hold now
        self.history_budget = history_budget(settings)[0]
        self.retained_bytes = 0  # frame data
        self.retained_frames = 0
        self.budget_evicted = 0  # frames the budget evicted (metric)
        #: topics with history, the one written to longest ago first
        self._by_write: dict[Topic, None] = {}
        #: topics whose frames the budget evicted, for the fan-out to check for lag
        self.trimmed: list[Topic] = []
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
            topic = self.by_name[name] = Topic(name, floor, now)
        topic.last_activity = now
        return topic

    def keep(self, topic: Topic, item: Sequenced) -> bool:
        """Store ``item`` in ``topic``'s ring (made with its first frame) and its
        position; True when that evicted older frames of it (frames of other topics
        the budget evicted are in ``trimmed``). One call per stored event: the
        fan-out's hottest line, written out here rather than in ``Topic``."""
        ring = topic.ring
        if ring is NO_HISTORY:
            settings = self.settings
            ring = topic.ring = Ring(settings.ring_max_frames, settings.ring_max_bytes)
            topic.positions = deque()
            self.with_history += 1
        data = ring.nbytes
        oldest = ring.oldest
        ring.publish(item.frame, item.id)
        evicted = ring.oldest - oldest
        if evicted:
            topic.forget_oldest(evicted)
        topic.positions.append(item.position)
        topic.published += 1
        self.retained_bytes += ring.nbytes - data
        self.retained_frames += 1 - evicted
        by_write = self._by_write
        by_write.pop(topic, None)
        by_write[topic] = None
        if self.retained_bytes + FRAME_OVERHEAD * self.retained_frames > self.history_budget:
            self._within_budget()
        return evicted > 0

    def keep_to_budget(self) -> None:
        """Evict what is over the budget now (after frames were flushed that
        could not be evicted while they were not)."""
        if self.retained_bytes + FRAME_OVERHEAD * self.retained_frames > self.history_budget:
            self._within_budget()

    def _within_budget(self) -> None:
        """Evict the history written to longest ago, oldest frame first, until all
        of it fits the budget again. Frames not yet flushed to subscribers stay
        (the one just stored among them): over the budget by one publish at most.
        Only the topics at the front are looked at (a topic whose frames all went
        leaves the order until it is written again): O(1) per publish once full."""
        excess = self.retained_bytes + FRAME_OVERHEAD * self.retained_frames - self.history_budget
        emptied: list[Topic] = []
        for topic in self._by_write:  # nothing is added or removed until the loop ends
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
                del self._by_write[topic]  # back in the order with its next frame
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
            self._by_write.pop(topic, None)
        newest = topic.newest_position
        if newest > self._swept_floor:
            self._swept[topic.name] = newest
        while len(self._swept) > self.settings.max_topics:
            oldest = next(iter(self._swept))
            self._swept_floor = max(self._swept_floor, self._swept.pop(oldest))

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
