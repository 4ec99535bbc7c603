"""A stream's opening: its topics prepared by the broker, then the stream made at
its resume point and joined.

Theory of operation
-------------------
``Opening.open`` is the first half of ``Hub.attach`` (which then writes the
response start and the first bytes). In order:

1. Patterns are refused where the broker cannot serve them
   (``_matching.patterns_refused``).
2. The broker prepares the topics (``Broker.prepare``: subscribes to new ones and
   loads their history). For patterns, a broker that holds only the topics its
   streams need first finds those they match where it keeps them
   (``Broker.expand``), and the births meanwhile are wanted (``Member.wants``:
   the pattern index counts the stream as opening until it is made).
3. The stream is made (``_make``), with nothing awaited from here on: what was
   applied is flushed first (its positions are the flushed heads), the topics
   are taken or made (for patterns, every topic they match: from the first
   pattern stream on, a topic's first events make it join the pattern streams it
   matches, ``FanOut.patterns_opened``), the resume point is found
   (``_resume.py``: in one partition as with one sequence; over several, the
   stream's id is its cursor, ``_cursor.py``) and the stream joins
   (``Streams.join``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .._asgi import Send
from .._patterns import is_pattern
from ..brokers import Broker, Expansion
from ..settings import StreamSettings
from . import _resume as resume
from ._fanout import FanOut
from ._matching import pattern_matches, patterns_refused
from ._streams import Streams
from ._subscription import Peer, Subscription
from ._topics import Topic, Topics

__all__ = ["Opening"]


class Opening:
    """How a hub's streams open (see the module docstring)."""

    def __init__(
        self,
        settings: StreamSettings,
        clock: Callable[[], float],
        broker: Broker,
        topics: Topics,
        streams: Streams,
        fanout: FanOut,
        last_position_of: Callable[[int], int],
    ) -> None:
        """``last_position_of``: a partition's newest position applied or known to
        exist (``Hub.last_position_of``): a new stream's id there."""
        self.retry_ms = settings.retry_ms
        self.clock = clock
        self.broker = broker
        self.topics = topics
        self.streams = streams
        self.fanout = fanout
        self.last_position_of = last_position_of

    async def open(
        self,
        send: Send,
        names: Sequence[str],
        peer: Peer,
        last_event_id: str | None,
        subject: str | None,
    ) -> tuple[Subscription, bytes]:
        """A stream of ``names`` on ``send``, made and joined, and its first bytes
        (which ``Hub.attach`` writes before the next flush); ``ValueError`` for
        patterns the broker cannot serve."""
        refusal = patterns_refused(self.broker.patterns_refusal, names)
        if refusal is not None:
            raise ValueError(refusal)
        patterns = tuple(name for name in names if is_pattern(name))
        if not patterns:
            waiting = self.broker.prepare(names)
            if waiting is not None:
                await waiting
            return self._make(send, names, peer, last_event_id, subject, patterns, None)
        self.streams.patterns.opening(patterns, 1)
        try:
            expansion = await self._expand(names, patterns)
            return self._make(send, names, peer, last_event_id, subject, patterns, expansion)
        finally:
            self.streams.patterns.opening(patterns, -1)

    async def _expand(self, names: Sequence[str], patterns: Sequence[str]) -> Expansion | None:
        """A broker that holds only the topics its streams need: the topics ``patterns``
        match where it keeps them (``Broker.expand``), prepared with the names (None: the
        broker stores every topic here)."""
        expanding = self.broker.expand(patterns)
        if expanding is None:
            return None
        expansion = await expanding
        found = [name for name in expansion.names if pattern_matches(name, patterns)]
        waiting = self.broker.prepare([*(n for n in names if not is_pattern(n)), *found])
        if waiting is not None:
            await waiting
        return expansion

    def _make(
        self,
        send: Send,
        names: Sequence[str],
        peer: Peer,
        last_event_id: str | None,
        subject: str | None,
        patterns: tuple[str, ...],
        expansion: Expansion | None,
    ) -> tuple[Subscription, bytes]:
        """The stream made at its resume point (``_resume.py``) and joined."""
        self.fanout.flush_pending()  # the positions below are the flushed heads
        now = self.clock()
        if patterns:
            self.fanout.patterns_opened()
            exact = [name for name in names if not is_pattern(name)]
            topics: Sequence[Topic] = self.streams.expand(exact, patterns, now)  # it grows
        else:
            topics = tuple([self.topics.get(name, now) for name in names])
        broker = self.broker
        covered = {0} if broker.partitions == 1 else {topic.partition for topic in topics}
        places = None
        over = None
        if patterns and broker.partitions > 1:  # it may gain topics of any partition
            over = resume.PatternsOver(
                max(0 if expansion is None else expansion.complete_up_to, broker.complete_up_to()),
                () if expansion is None else expansion.gone_up_to_in,
                self.topics.forgotten_over(patterns),
            )
        if len(covered) <= 1 and over is None:  # one partition: as with one sequence
            partition = min(covered, default=0)
            status, cursors, first = resume.starting_point(
                topics,
                last_event_id,
                broker.first_position_of(partition),
                self.last_position_of(partition),
                broker.lost,
                self.retry_ms,
                self._forgotten(patterns, expansion),
            )
        else:  # several: the stream's id is its cursor (``_cursor.py``)
            status, cursors, first, places = resume.starting_point_over(
                topics,
                last_event_id,
                {p: broker.first_position_of(p) for p in covered},
                {p: self.last_position_of(p) for p in covered},
                broker.partitions,
                broker.lost,
                self.retry_ms,
                over,
            )
        subscription = Subscription(
            self.streams.next_id(),
            send,
            topics,
            peer,
            now,
            asyncio.get_running_loop().create_future(),
            subject,
        )
        subscription.resume = status
        subscription.patterns = patterns
        subscription.places = places
        subscription.cursors = cursors  # its position once the first bytes are written
        self.streams.join(subscription)
        return subscription, first

    def _forgotten(
        self, patterns: Sequence[str], expansion: Expansion | None
    ) -> resume.Forgotten | None:
        """A pattern stream's topics gone before it resumes (``Topics.forgotten_by``), and
        those the broker may have lost without trace (``Expansion.gone_up_to``)."""
        if not patterns:
            return None
        return self.topics.forgotten_by(patterns, 0 if expansion is None else expansion.gone_up_to)
