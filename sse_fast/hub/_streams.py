"""Streams: the open streams of one hub, and the one place they join and leave.

* Join. ``Streams.join`` registers a stream made at its resume position
  (``Hub.attach``): it goes in the map by id (``/stats``, heartbeats, the
  drain), each of its topics counts it (``Topic.subscribers``: presence
  figures, whether a topic may go), and every listener is told (``joined``).
* Leave. ``Streams.leave`` undoes exactly that, once, whichever side ends the
  stream (``_closing.py``: a server-side close, a client gone, a cut): out of
  the map, out of its topics' sets and counts (its catch-up task cancelled),
  every listener told (``left``), and a topic without history goes with its
  last stream. A stream that has left is left alone.
* End. How a stream ended is known when its ``closed`` resolves (the reason the
  handler gets; ``server-stopped`` when the handler was cancelled), which may be
  after it left (a final write still going out) or before (a cancelled handler,
  which detaches it then). A listener that ``follows`` a stream at its join is
  told then (``ended``): one callback on that future, only for those streams.
* Patterns. A stream that names topic patterns is indexed under them at its
  join and out at its leave (``_matching.py``); it holds the topics with
  history its patterns match, those that have one when it opens and each
  other one with its first events (``created``, called by the fan-out before
  it writes them), counted on the topic as a named one is, the listeners told
  (``adopted``): a stream holds its matched topics as it holds its named ones,
  in presence too. A topic without history (a named subscriber's, nothing
  published yet) is not held: it goes with its last named subscriber.
* Listeners are given at construction, any number, in the order they are told:
  presence news (``_presence.py``), webhooks (``_webhooks.py``) and the metrics
  (``_metrics.py``). ``StreamListener`` is what they implement: every method is
  optional (the base does nothing).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Sequence

from ..protocol import Reason
from ._matching import PatternStreams
from ._subscription import Subscription
from ._topics import Topic, Topics

__all__ = ["StreamListener", "Streams"]


class StreamListener:
    """Told of each stream that joins and leaves a hub (``Streams``); the base does
    nothing, so a listener defines only what it needs."""

    def joined(self, subscription: Subscription) -> None:
        """``subscription`` joined (its resume outcome set, its topics counting it)."""

    def adopted(self, subscription: Subscription, topic: Topic) -> None:
        """``topic``, created while ``subscription`` is open, joined it by pattern
        (counted on the topic as a named one is)."""

    def left(self, subscription: Subscription) -> None:
        """``subscription`` left: no more writes reach it (told once)."""

    def follows(self, subscription: Subscription) -> bool:
        """Whether to be told how ``subscription`` ends (``ended``); asked at its join."""
        return False

    def ended(self, subscription: Subscription, reason: str) -> None:
        """``subscription``'s ``closed`` resolved with ``reason`` (``server-stopped``:
        cancelled), for a stream this listener ``follows``."""


class Streams:
    """The open streams of one hub by id; the only place they join and leave."""

    def __init__(
        self,
        topics: Topics,
        clock: Callable[[], float],
        listeners: Sequence[StreamListener] = (),
        patterns: PatternStreams | None = None,
    ) -> None:
        """``patterns``: the index of the streams that name patterns (a new one when
        not given; the hub gives the one its topics' ``on_drop`` tells)."""
        self.topics = topics
        self.clock = clock
        #: the open streams by id (read it; ``join`` and ``leave`` change it)
        self.by_id: dict[int, Subscription] = {}
        self.listeners = tuple(listeners)
        #: the streams that name patterns, by pattern
        self.patterns = patterns if patterns is not None else PatternStreams()
        self._next_id = itertools.count(1)

    def next_id(self) -> int:
        """A new stream's id (``/stats`` lists streams by it)."""
        return next(self._next_id)

    def join(self, subscription: Subscription) -> None:
        """Register a stream: in the map, counted on its topics, the listeners told."""
        self.by_id[subscription.id] = subscription
        for topic in subscription.topics:
            topic.subscribers += 1
        if subscription.patterns:
            self.patterns.add(subscription, subscription.patterns)
        for listener in self.listeners:
            listener.joined(subscription)
        for listener in self.listeners:
            if listener.follows(subscription):
                subscription.closed.add_done_callback(
                    functools.partial(_tell_end, listener, subscription)
                )

    def leave(self, subscription: Subscription) -> None:
        """Out of the hub: no more writes reach it (see the module doc). Once: a
        stream that has left (closed) is left alone."""
        if subscription.state == Subscription.CLOSED:
            return
        self.by_id.pop(subscription.id, None)
        if subscription.patterns:
            self.patterns.remove(subscription, subscription.patterns)
        subscription.leave_topics()
        topics = subscription.topics
        for topic in topics:
            topic.subscribers -= 1
        for listener in self.listeners:
            listener.left(subscription)
        now = self.clock()
        for topic in topics:
            self.topics.unsubscribed(topic, now)

    def created(self, topic: Topic) -> None:
        """``topic``'s first events are about to be written (``FanOut.on_first``): the
        open streams whose patterns match it join it, each counted on it."""
        found = self.patterns.created(topic)
        if not found:
            return
        for subscription in found:
            if subscription.state != Subscription.CLOSED:
                subscription.adopt(topic)
                topic.subscribers += 1
                for listener in self.listeners:
                    listener.adopted(subscription, topic)

    def expand(self, names: Sequence[str], patterns: Sequence[str], now: float) -> list[Topic]:
        """The topics of a new stream: those ``names`` names (created if need be) and
        the existing ones with history its ``patterns`` match, each once (one without
        history joins with its first events: ``created``)."""
        topics = self.topics
        found = {topics.get(name, now): None for name in names}
        by_name = topics.by_name
        for pattern in patterns:
            for name in self.patterns.existing(pattern, by_name):
                topic = by_name.get(name)
                if topic is not None and topic.has_history:
                    topic.last_activity = now
                    found.setdefault(topic, None)
        return list(found)


def _tell_end(
    listener: StreamListener, subscription: Subscription, closed: asyncio.Future[str]
) -> None:
    reason = Reason.SERVER_STOPPED if closed.cancelled() else closed.result()
    listener.ended(subscription, reason)
