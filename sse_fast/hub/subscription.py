"""One SSE stream attached to the hub, and its place in its topics' sets.

A subscription is *in sync* (at its topics' flushed positions, written by the
flush with everyone else, no cursor of its own), *catching up* (its own
cursors and one task writing its backlog from the rings) or *closed*. The
moves between the sets of its topics are here; when to make them is
``fanout.py``'s business.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..abort import ConnectionKey
from ..asgi import Send

if TYPE_CHECKING:
    from .topics import Topic

__all__ = [
    "Subscription",
]


class Subscription:
    """One SSE stream: ``hub.attach`` makes it; ``closed`` resolves (with the
    reason) when the stream is over, from either side."""

    __slots__ = (
        "__weakref__",
        "client",
        "closed",
        "connected_at",
        "connection",
        "cursors",
        "id",
        "resume",
        "send",
        "state",
        "subject",
        "task",
        "topics",
    )

    IN_SYNC, CATCHING_UP, CLOSED = "in-sync", "catching-up", "closed"

    def __init__(
        self,
        id: int,
        send: Send,
        topics: list[Topic],
        client: str,
        now: float,
        closed: asyncio.Future[str],
        connection: ConnectionKey | None = None,
        subject: str | None = None,
    ) -> None:
        self.id = id
        self.subject = subject  # the JWT's sub (presence), None without one
        self.connection = connection  # the TCP connection to cut, when it carries only us
        self.send = send
        self.topics = topics
        self.client = client
        self.connected_at = now
        self.closed = closed
        #: the resume outcome: ``none``, ``resumed``, ``unknown`` or ``evicted``
        self.resume = "none"
        self.cursors: dict[Topic, int] = {}  # ring cursor per topic while not in sync
        self.state = Subscription.IN_SYNC
        self.task: asyncio.Task[None] | None = None  # the catch-up task

    def enter_sync(self) -> None:
        """Join the in-sync sets; the caller checked it is at every flushed head."""
        self.state = Subscription.IN_SYNC
        self.cursors.clear()
        if len(self.topics) == 1:
            self.topics[0].in_sync[self] = self.send
        else:
            for topic in self.topics:
                topic.in_sync_multi[self] = self.send

    def leave_sync(self, cursors: dict[Topic, int]) -> None:
        """Move to the catching-up sets, at ``cursors``."""
        self.state = Subscription.CATCHING_UP
        for topic in self.topics:
            topic.in_sync.pop(self, None)
            topic.in_sync_multi.pop(self, None)
            topic.catching_up[self] = None
        self.cursors = cursors

    def caught_up(self) -> None:
        """The backlog is written: leave the catching-up sets and join the in-sync ones."""
        self.task = None
        for topic in self.topics:
            topic.catching_up.pop(self, None)
        self.enter_sync()

    def leave_topics(self) -> None:
        """Closed: out of every set of every topic; its catch-up task is cancelled."""
        self.state = Subscription.CLOSED
        for topic in self.topics:
            topic.in_sync.pop(self, None)
            topic.in_sync_multi.pop(self, None)
            topic.catching_up.pop(self, None)
            topic.subscriptions.pop(self, None)
        self.cursors.clear()
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def behind(self) -> int:
        """Frames stored and not yet written to this stream (0 when in sync)."""
        return sum(topic.ring.head - cursor for topic, cursor in self.cursors.items())
