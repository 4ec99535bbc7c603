"""One SSE stream attached to the hub, and its place in its topics' sets.

A subscription is *in sync* (at its topics' flushed positions, written by the
flush with everyone else, no cursor of its own; a compressed stream of one
topic in its topic's group, ``_coding.py``), *catching up* (its own
cursors and one task writing its backlog from the rings) or *closed*. The
moves between the sets of its topics are here; when to make them is
``_fanout.py``'s business.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._abort import ConnectionKey, connection_key
from .._asgi import Message, Receive, Send
from ._coding import CodedStream, TopicCodings

if TYPE_CHECKING:
    from .._core import Topic

__all__ = [
    "NO_PEER",
    "Peer",
    "Subscription",
    "Watch",
    "peer_of",
]

#: the cursors of a stream in sync: none of its own (one shared, read-only mapping)
_NO_CURSORS = cast("dict[Topic, int]", MappingProxyType({}))
#: a stream whose client address and TCP connection are unknown
NO_PEER: tuple[str, ConnectionKey | None] = ("?", None)
#: what a subscription keeps of its client (``peer_of``)
Peer = Mapping[str, Any] | tuple[str, ConnectionKey | None]


def peer_of(
    scope: Mapping[str, Any] | None, client: str = "?", connection: ConnectionKey | None = None
) -> Peer:
    """The request's ASGI ``scope`` when there is one (``client`` and ``connection``
    are read from it when asked for), else ``(client, connection)``."""
    if scope is not None:
        return scope
    return NO_PEER if client == "?" and connection is None else (client, connection)


class Watch(Protocol):
    """What a stream tells the watch waiting on its ``receive`` (``DisconnectWatch``,
    ``_disconnect_watch.py``)."""

    def on_message(self, subscription: Subscription, waiter: asyncio.Future[Message]) -> None:
        """``receive()`` returned (or failed) for ``subscription``."""


class Subscription:
    """One SSE stream: ``hub.attach`` makes it; ``closed`` resolves (with the
    reason) when the stream is over, from either side.

    It is what an idle stream costs us, so it holds only what it needs and
    derives the rest: ``client`` and ``connection`` are read from the request's
    ASGI scope (``peer``, which the server holds anyway) when they are asked for
    (``/stats``, webhooks, cutting a connection), and the subscription is itself
    the callback of its disconnect watch (``_disconnect_watch.py``)."""

    __slots__ = (
        "__weakref__",
        "closed",
        "coded",
        "connected_at",
        "cursors",
        "id",
        "patterns",
        "peer",
        "places",
        "receive",
        "resume",
        "send",
        "state",
        "subject",
        "task",
        "topics",
        "watch",
    )

    IN_SYNC, CATCHING_UP, CLOSED = "in-sync", "catching-up", "closed"

    def __init__(
        self,
        id: int,
        send: Send,
        topics: Sequence[Topic],
        peer: Peer,
        now: float,
        closed: asyncio.Future[str],
        subject: str | None = None,
    ) -> None:
        self.id = id
        self.subject = subject  # the JWT's sub (presence), None without one
        #: the request's ASGI scope (its ``client``, ``server``, ``http_version``), or
        #: ``(client, connection)`` given as such (``NO_PEER`` when unknown)
        self.peer = peer
        self.send = send
        #: a compressed stream's ``send`` (``_coding.py``), None for the others
        self.coded = send if type(send) is CodedStream else None
        #: its topics: those it names, and those its patterns matched (``adopt``)
        self.topics: Sequence[Topic] = topics
        #: the topic patterns it names (``_matching.py``), () for none
        self.patterns: tuple[str, ...] = ()
        self.connected_at = now
        self.closed = closed
        #: the resume outcome: ``none``, ``resumed``, ``unknown`` or ``evicted``
        self.resume = "none"
        self.cursors = _NO_CURSORS  # ring cursor per topic while not in sync
        #: a stream whose topics span several partitions: its position in each
        #: (partition -> position: its cursor, ``_cursor.py``); None for the others
        self.places: dict[int, int] | None = None
        self.state = Subscription.IN_SYNC
        self.task: asyncio.Task[None] | None = None  # the catch-up task
        #: the stream's ``receive`` and the watch waiting on it (``DisconnectWatch.arm``)
        self.receive: Receive | None = None
        self.watch: Watch | None = None

    @property
    def client(self) -> str:
        """The client's address, ``"host:port"`` (``"?"`` when unknown)."""
        peer = self.peer
        if isinstance(peer, tuple):
            return peer[0]
        address = peer.get("client")
        return f"{address[0]}:{address[1]}" if address else "?"

    @property
    def connection(self) -> ConnectionKey | None:
        """The TCP connection to cut, when it carries only this stream (HTTP/1.x)."""
        peer = self.peer
        return peer[1] if isinstance(peer, tuple) else connection_key(peer)

    def __call__(self, waiter: asyncio.Future[Message]) -> None:
        """``receive()`` returned: the watch's callback (no bound method per message)."""
        if self.watch is not None:
            self.watch.on_message(self, waiter)

    def enter_sync(self) -> None:
        """Join the in-sync sets; the caller checked it is at every flushed head."""
        self.state = Subscription.IN_SYNC
        self.cursors = _NO_CURSORS
        if len(self.topics) == 1 and self.places is None:
            coded = self.coded
            if coded is not None and coded.own is None:  # its topic's compressed bytes
                topic = self.topics[0]
                if topic.coded is None:
                    topic.coded = TopicCodings()
                topic.coded.join(self, coded)
            else:
                self.topics[0].join_in_sync(self, self.send)
        else:
            for topic in self.topics:
                topic.join_multi(self, self.send)

    @property
    def in_sync_started(self) -> bool:
        """In sync, its first bytes written (not made at its resume point only)."""
        return self.state == Subscription.IN_SYNC and self.cursors is _NO_CURSORS

    def adopt(self, topic: Topic) -> None:
        """A topic one of its patterns matches, whose first events the flush is about
        to write (``Streams.created``): it joins the stream before them (the topic's
        flushed position, where the flush starts), in the set the stream is in. In
        sync, a stream of one topic is written as a named one is (the single-topic
        sets); with a second it moves to ``join_multi`` on both (this flush reads
        the first one's unwritten frames in the merge). A stream not started yet
        (``FanOut.start`` to come) gets the topic's cursor beside its others. A
        pattern stream's ``topics`` is a list (it grows)."""
        topics = self.topics
        assert isinstance(topics, list), "only a pattern stream adopts topics"
        state = self.state
        if state == Subscription.IN_SYNC:
            if not self.in_sync_started:  # its first bytes not written yet
                self.cursors[topic] = topic.flushed
            elif self.places is not None:  # a cursor as its id: merged (``FanOut._merge``)
                topic.join_multi(self, self.send)
            elif not topics:
                topic.join_in_sync(self, self.send)
            else:
                if len(topics) == 1:
                    topics[0].leave_in_sync(self)
                    topics[0].join_multi(self, self.send)
                topic.join_multi(self, self.send)
        elif state == Subscription.CATCHING_UP:
            self.cursors[topic] = topic.flushed
            topic.join_catching_up(self)
        topics.append(topic)

    def leave_sync(self, cursors: dict[Topic, int]) -> None:
        """Move to the catching-up sets, at ``cursors``."""
        self.state = Subscription.CATCHING_UP
        self._leave_group()
        for topic in self.topics:
            topic.leave_in_sync(self)
            topic.in_sync_multi.pop(self, None)
            topic.join_catching_up(self)
        self.cursors = cursors

    def caught_up(self) -> None:
        """The backlog is written: leave the catching-up sets and join the in-sync ones."""
        self.task = None
        for topic in self.topics:
            topic.catching_up.pop(self, None)
        self.enter_sync()

    def leave_topics(self) -> None:
        """Closed: out of every set of every topic; its catch-up task is cancelled.
        Once: a closed subscription is left alone. (``Streams.leave`` calls it, and
        counts the stream out of its topics.)"""
        if self.state == Subscription.CLOSED:
            return
        self.state = Subscription.CLOSED
        self._leave_group()
        for topic in self.topics:
            topic.leave_in_sync(self)
            topic.in_sync_multi.pop(self, None)
            topic.catching_up.pop(self, None)
        self.cursors = _NO_CURSORS
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _leave_group(self) -> None:
        """Out of its topic's compressed group (``_coding.py``), when in one."""
        coded = self.coded
        if coded is not None and coded.group is not None:
            coded.group.leave(self)

    def behind(self) -> int:
        """Frames stored and not yet written to this stream (0 when in sync)."""
        return sum(topic.ring.head - cursor for topic, cursor in self.cursors.items())
