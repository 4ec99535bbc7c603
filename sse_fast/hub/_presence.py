"""Presence: who is subscribed to a topic, and the news of it.

* **Counting.** A topic holds its subscriptions; a subscription holds its
  subject, the ``sub`` claim of the JWT it came with (None without a token, or
  with a token that has no ``sub``). ``Hub.presence(topic)`` is this worker's
  figure: ``{"subscribers": n, "subjects": {"alice": 2, ...}}`` (connections
  per subject; the anonymous ones only counted). ``GET /presence?topic=``
  and ``Operations.presence`` add up every worker's through the broker and,
  with Redis, every node's for the topics ``presence_topics`` names (each
  worker keeps its figures of those topics in Redis: ``brokers/redis/_presence.py``).
* **News.** For the topics ``presence_topics`` names, each worker gathers the
  joins and leaves of ``presence_interval`` seconds and publishes them as one
  event ``presence`` to the companion topic ``<topic>/presence``, data
  ``{"topic": t, "subjects": {"alice": 1, "bob": -1}, "anonymous": 0}``: the
  net change of connections per subject (a subject's 0 is left out, and an
  interval without change publishes nothing): a roster's updates between
  reads of ``/presence`` (news lags the live figures by up to an interval). A
  reconnect within the interval is no news, and a storm of reconnects makes at
  most one event per topic and worker per interval: it cannot flood the
  companion topic.

Companion topics (``*/presence``) are never tracked themselves.

* **Patterns.** A stream of topic patterns (``user/42/*``) is present in each
  topic it holds, as a named subscriber is: in the ones its patterns matched
  when it opened and in each created later, from when it joins it
  (``adopted``); presence says who receives a topic's events. ``/presence``
  takes topic names, not patterns.

* **Privacy.** A companion topic is as private as its topic (``app/_auth.py``):
  the news names subjects, so ``user/2/inbox/presence`` needs the rights of
  ``user/2/inbox`` when that is private; ``public_presence_topics`` covering
  ``user/2/inbox`` makes it public (``serve`` then warns).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._companions import COMPANION
from .._patterns import matches
from ..publishing import PublishRequest
from ._streams import StreamListener

if TYPE_CHECKING:
    from .._core import Topic
    from ._subscription import Subscription

__all__ = [
    "REFRESH",
    "PresenceNews",
    "add_up",
    "figures",
]

log = logging.getLogger("sse_fast")

#: seconds between two writes of a worker's figures of a topic that did not change
#: (readers take figures of the last 30 s: ``brokers/redis/_presence.py``)
REFRESH = 10.0


def figures(topic: Topic | None) -> dict[str, Any]:
    """This worker's presence on ``topic`` (None: no subscriber here)."""
    if topic is None:
        return {"subscribers": 0, "subjects": {}}
    subjects = Counter(s.subject for s in topic.members() if s.subject is not None)
    return {"subscribers": topic.subscribers, "subjects": dict(subjects)}


def add_up(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several workers' (or nodes') figures."""
    subjects: Counter[str] = Counter()
    for part in parts:
        subjects.update(part.get("subjects", {}))
    return {
        "subscribers": sum(int(part.get("subscribers", 0)) for part in parts),
        "subjects": dict(sorted(subjects.items())),
    }


class PresenceNews(StreamListener):
    """The joins and leaves of the tracked topics, published once per interval (a
    listener of the hub's ``Streams``)."""

    def __init__(
        self,
        patterns: Sequence[str],
        interval: float,
        publish: Callable[[list[PublishRequest]], Awaitable[object]],
        max_topic_length: int = 256,
    ) -> None:
        self.patterns = tuple(patterns)
        self.interval = interval
        self.publish = publish
        self._tracked: dict[str, bool] = {}
        #: topic -> net change per subject ("" for the anonymous) since the last news
        self.pending: dict[str, Counter[str]] = {}
        #: topics whose figures changed since the store last wrote them
        self.changed: set[str] = set()
        #: tracked topics with subscribers here at the last store
        self.held: set[str] = set()
        self.max_topic_length = max_topic_length
        self._too_long: set[str] = set()

    def tracks(self, name: str) -> bool:
        """Whether topic ``name`` matches ``presence_topics`` (a companion topic never does)."""
        tracked = self._tracked.get(name)
        if tracked is None:
            tracked = not name.endswith(COMPANION) and matches(name, self.patterns)
            if len(self._tracked) < 100_000:  # a cache, bounded
                self._tracked[name] = tracked
        return tracked

    def joined(self, subscription: Subscription) -> None:
        """Count a stream that opened in the news of its tracked topics."""
        self._change(subscription, subscription.topics, 1)

    def adopted(self, subscription: Subscription, topic: Topic) -> None:
        """Count a pattern stream in the news of a tracked topic it joined."""
        self._change(subscription, (topic,), 1)

    def left(self, subscription: Subscription) -> None:
        """Count a stream that closed in the news of its tracked topics."""
        self._change(subscription, subscription.topics, -1)

    def _change(self, subscription: Subscription, topics: Sequence[Topic], delta: int) -> None:
        if not self.patterns:
            return
        for topic in topics:
            if self.tracks(topic.name):
                self.pending.setdefault(topic.name, Counter())[subscription.subject or ""] += delta
                self.changed.add(topic.name)

    def news(self) -> list[PublishRequest]:
        """The events of the interval that ended (and a fresh interval)."""
        pending, self.pending = self.pending, {}
        out = []
        for name, changes in pending.items():
            anonymous = changes.pop("", 0)
            subjects = {subject: n for subject, n in sorted(changes.items()) if n}
            if not (subjects or anonymous):
                continue
            if len(name) + len(COMPANION) > self.max_topic_length:
                if name not in self._too_long and len(self._too_long) < 1000:
                    self._too_long.add(name)
                    log.warning(
                        "no presence news for %s: %s%s is longer than max_topic_length",
                        name,
                        name,
                        COMPANION,
                    )
                continue
            data = {"topic": name, "subjects": subjects, "anonymous": anonymous}
            out.append(PublishRequest((name + COMPANION,), data, "presence"))
        return out

    async def run(
        self,
        figures_of: Callable[[str], dict[str, Any]],
        store: Callable[[dict[str, dict[str, Any]]], Awaitable[None]],
        refresh: float = REFRESH,
    ) -> None:
        """Every ``interval`` seconds, until cancelled: publish the news, and give
        ``store`` this worker's figures of the tracked topics that changed (all
        of those with subscribers here every ``refresh`` seconds, so that a
        reader can tell a live worker's figures from a dead one's)."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + refresh
        while True:
            await asyncio.sleep(self.interval)
            refreshing = loop.time() >= next_refresh
            if refreshing:
                next_refresh = loop.time() + refresh
            await self._tick(figures_of, store, refreshing)

    async def _tick(
        self,
        figures_of: Callable[[str], dict[str, Any]],
        store: Callable[[dict[str, dict[str, Any]]], Awaitable[None]],
        refreshing: bool,
    ) -> None:
        events = self.news()
        if events:
            try:
                await self.publish(events)
            except Exception as exc:  # the broker away: news is news only now
                log.warning("presence news for %d topics not published: %s", len(events), exc)
        changed, self.changed = self.changed, set()
        if refreshing:
            changed |= self.held
        if not changed:
            return
        update = {name: figures_of(name) for name in changed}
        self.held = (self.held | changed) - {n for n, f in update.items() if not f["subscribers"]}
        try:
            await store(update)
        except Exception as exc:
            self.changed |= changed  # written with the next interval
            log.warning("presence figures not stored: %s", exc)

    async def final(
        self,
        figures_of: Callable[[str], dict[str, Any]],
        store: Callable[[dict[str, dict[str, Any]]], Awaitable[None]],
    ) -> None:
        """At shutdown, after the drain: the last news (the drain's leaves), and
        this worker's figures of every topic it held stored as none."""
        self.changed |= self.held
        await self._tick(lambda name: {"subscribers": 0, "subjects": {}}, store, False)
