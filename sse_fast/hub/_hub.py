"""The hub of one worker: the parts, and the few calls that go through them.

A publish goes ``Hub.publish`` (the small ones of a turn of the loop together:
``_publish_group.py``) -> the broker (``brokers/``: sequencing) ->
``FanOut.apply`` (``_topics.py``: storage) -> ``FanOut.flush`` -> each stream's
``send``. A stream comes in through ``Hub.attach`` (resume in ``_resume.py``,
the server's ``send`` style in ``sse_fast/_asgi.py``, the client leaving watched in
``_disconnect_watch.py``), joins and leaves in ``_streams.py``
(whose listeners, given here, are presence, webhooks and the metrics) and is
ended in ``_closing.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from .._abort import ConnectionKey
from .._asgi import Headers, Receive, Send, SendStyle
from .._control import RESUME_HEADER_ASGI, disconnect_frame
from .._patterns import is_pattern
from .._publish_checks import check_distinct_ids, check_topic
from .._tasks import stop_task
from ..brokers import Broker, Expansion
from ..brokers._sequencing import Sequenced
from ..brokers.local import LocalBroker
from ..protocol import Reason
from ..publishing import PublishRequest
from ..schemas import Schemas, Stream
from ..schemas import load as load_schemas
from ..settings import Settings
from ..settings._checks import split_list
from . import _resume as resume
from ._breaks import mark_break, mark_missed
from ._closing import Closer
from ._disconnect_watch import DisconnectWatch
from ._fanout import FanOut
from ._figures import Figures
from ._lifecycle import Lifecycle
from ._matching import PatternStreams, pattern_matches, patterns_refused
from ._metrics import Metrics
from ._presence import PresenceNews
from ._publish_group import PublishGroup
from ._streams import Streams
from ._subscription import Peer, Subscription, peer_of
from ._topics import Topic, Topics
from ._webhooks import Webhooks

__all__ = [
    "SSE_HEADERS",
    "Hub",
]

log = logging.getLogger("sse_fast")

#: the headers of every event stream's response: the content type, no caching, no proxy buffering
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


class Hub:
    """Topics and streams of one worker (see the package docstring)."""

    def __init__(
        self,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        broker: Broker | None = None,
        *,
        reports: Sequence[Callable[[], dict[str, Any]]] = (),
    ) -> None:
        """``reports``: figures other parts add to this worker's ``/metrics`` report
        (mirror mode's reader: ``app/_upstream.py``)."""
        self.settings = settings = settings or Settings()
        self.metrics = metrics = metrics or Metrics()
        self.clock = clock
        #: the declared streams (``declare``, ``settings.schemas``); None: none declared,
        #: and publishing does not look at schemas at all
        self.schemas = load_schemas(settings.schemas) if settings.schemas else None
        self.broker = broker = broker or LocalBroker()
        #: the streams that name patterns, by pattern: a dropped topic leaves it
        patterns = PatternStreams()

        def dropped(name: str) -> None:  # the topics tell of a dropped one
            patterns.dropped(name)
            broker.release(name)

        self.topics = _topics_for(settings, broker, dropped)
        self.send_style = SendStyle()
        #: called when the drain starts (before the streams are closed)
        self.on_drain: set[Callable[[], None]] = set()
        #: figures other parts add to this worker's /metrics report (mirror mode's upstream)
        self.reports = tuple(reports)
        self.presence_news = PresenceNews(
            split_list(settings.presence_topics),
            settings.presence_interval,
            self.publish,
            settings.max_topic_length,
        )
        self.webhooks = Webhooks(settings, metrics, clock) if settings.webhook_urls else None
        listeners = (self.presence_news, self.webhooks, metrics)
        #: the open streams: where they join and leave, and the listeners told
        self.streams = Streams(
            self.topics, clock, [x for x in listeners if x is not None], patterns
        )
        #: the open streams by id (``streams.by_id``; read it)
        self.subscriptions = self.streams.by_id
        self.closer = Closer(settings, metrics, self.send_style, self.streams)
        #: every stream's wait for ``http.disconnect`` (one watch, no object per stream)
        self.watch = DisconnectWatch(self.detach)
        self.fanout = FanOut(
            settings,
            metrics,
            clock,
            self.send_style,
            self.topics,
            self.closer,
            # from the first pattern stream on (``_open``), a topic's first events make
            # it join the pattern streams it matches (and the names' index)
            on_first=self.streams.created,
            # with several partitions: their cursors' rest (``_cursor.py``)
            complete_up_to=broker.complete_up_to if broker.partitions > 1 else None,
        )
        self.lifecycle = Lifecycle(
            settings, clock, self.subscriptions, self.topics, self.fanout, self.closer
        )
        self.broker.bind(self)
        self.publish_group = PublishGroup(self.broker, metrics, self.topics)
        self._periodic: asyncio.Task[None] | None = None
        self._presence: asyncio.Task[None] | None = None
        #: True from ``start`` until it returns (stays True if it failed): /stats says it
        #: per worker, so that "every worker answers" can be told from "every worker
        #: serves" (a worker on Redis answers gathers before its start is done)
        self.starting = False
        self.figures = Figures(self)

    # ---------------------------------------------------------------- running

    async def start(self) -> None:
        """Connect the broker and start heartbeats and sweeping (server startup)."""
        self.starting = True
        await self.broker.start()
        # the broker may join a running sequence: positions before it are not ours
        for partition in range(self.broker.partitions):
            self.topics.skip_to_in(partition, self.broker.first_position_of(partition) - 1)
        self._periodic = asyncio.get_running_loop().create_task(self.lifecycle.run_periodic())
        if self.webhooks is not None:
            self.webhooks.start()
        if self.presence_news.patterns:
            self._presence = asyncio.get_running_loop().create_task(
                self.presence_news.run(self.figures.of_topic, self.broker.store_presence)
            )
        self.starting = False

    async def stop(self) -> None:
        """Drain (unless drained), stop the periodic work, disconnect the broker."""
        if not self.draining:
            await self.drain()
        if self._periodic is not None:
            await stop_task(self._periodic)
        if self._presence is not None:
            await stop_task(self._presence)
            try:  # the drain's leaves as news; this worker's figures in Redis as none
                await self.presence_news.final(self.figures.of_topic, self.broker.store_presence)
            except Exception as exc:  # pragma: no cover - the broker going away too
                log.warning("last presence news and figures not written: %s", exc)
        if self.webhooks is not None:  # after the drain: its disconnects are sent too
            await self.webhooks.stop()
        self.publish_group.publish_waiting()
        await self.broker.close()

    @property
    def draining(self) -> bool:
        """Whether the drain has started: streams are closing, endpoints refuse new ones."""
        return self.lifecycle.draining

    async def drain(self) -> None:
        """Close every stream with a jittered ``retry`` (its ``on_drain`` callbacks first), cutting
        what is not out within ``drain_timeout``."""
        for callback in list(self.on_drain):  # e.g. publish streams waiting for a body
            callback()
        await self.lifecycle.drain()

    def heartbeat(self) -> int:
        """Send a keep-alive comment to every in-sync stream; return how many."""
        return self.lifecycle.heartbeat()

    def sweep(self) -> int:
        """Drop idle topics; return how many."""
        return self.lifecycle.sweep()

    # ---------------------------------------------------------------- publishing

    @property
    def last_position(self) -> int:
        """The newest position applied or known to exist (``horizon``): a new stream's id."""
        return max(self.topics.last_position, self.broker.horizon)

    def last_position_of(self, partition: int) -> int:
        """``last_position`` in one of the broker's partitions (see ``Broker.partitions``)."""
        return max(self.topics.last_position_of(partition), self.broker.horizon_of(partition))

    async def publish(
        self, requests: Sequence[PublishRequest], *, checked: bool = False
    ) -> list[str]:
        """Publish events (the small ones of a turn of the loop together: ``_publish_group.py``);
        return their ids. Nothing is published on error (``PublishError``, with the HTTP
        status to answer). ``checked``: the requests come from ``parse_publish_body`` or
        ``parse_event``, which checked their topic names (room for new topics is checked)."""
        if not requests:
            return []
        self._check(requests, checked)
        if self.schemas is not None:
            requests = self.schemas.check(requests)
        ids = await self.publish_group.publish(list(requests), self.clock())
        self.metrics.published_total += len(ids)  # here: once per server, not per worker
        return ids

    def publish_nowait(self, requests: Sequence[PublishRequest]) -> list[str]:
        """Synchronous publish for embedding with the local broker (one worker)."""
        if not requests:
            return []
        self._check(requests)
        if self.schemas is not None:
            requests = self.schemas.check(requests)
        self.publish_group.publish_waiting()  # those awaited before this one go first
        ids = self.broker.publish_nowait(list(requests), self.clock())
        self.metrics.published_total += len(ids)
        return ids

    def declare(self, *streams: Stream) -> None:
        """Declare typed streams (``sse_fast.schemas``): their topics' publishes are checked."""
        if self.schemas is None:
            self.schemas = Schemas()
        for stream in streams:
            self.schemas.add(stream)

    def _check(self, requests: Sequence[PublishRequest], checked: bool = False) -> None:
        if not checked:
            for request in requests:
                for name in request.topics:
                    check_topic(name, self.settings)
            if len(requests) > 1:
                check_distinct_ids(list(requests))
        self.publish_group.check_room(requests)

    def apply(self, items: Sequence[Sequenced]) -> None:
        """Store sequenced events and write them out (what the broker delivers)."""
        self.fanout.apply(items)

    def rejoined(self, history_from: int, reason: str | None, partition: int = 0) -> None:
        """The broker rejoined ``partition`` at ``history_from``: a break (``_breaks.py``)."""
        mark_break(self.fanout, history_from, reason, partition, self.streams.patterns.unheld())

    def newest_position(self, name: str) -> int | None:
        """The newest position topic ``name`` holds (or its floor); None without the topic."""
        topic = self.topics.by_name.get(name)
        return None if topic is None else topic.newest_position

    def load(self, name: str, floor: int, items: Sequence[Sequenced]) -> None:
        """A topic's history from a broker shared by several nodes (``Member.load``)."""
        topic = self.topics.get(name, self.clock())
        if not topic.has_history:
            topic.raise_floor(floor)
        self.fanout.apply(items)

    def wants(self, name: str, opening: bool = True) -> bool:
        """Whether an open (or opening) pattern stream would hold ``name`` (``Member.wants``)."""
        return self.streams.patterns.wants(name, opening)

    def pattern_streams(self) -> int:
        """How many streams of topic patterns are open or being opened (``Member``)."""
        return self.streams.patterns.open_or_opening

    def flush_pending(self) -> None:
        """Write out what was applied, then keep the history in budget (``Member``)."""
        self.fanout.flush_pending()
        self.fanout.keep_to_budget()

    def missed(self, names: Sequence[str], position: int, reason: str) -> None:
        """Events of ``names`` lost at ``position``: their streams are told (``_breaks.py``)."""
        mark_missed(self.fanout, names, position, reason)

    # ---------------------------------------------------------------- streams

    def next_subscription_id(self) -> int:
        """A new stream's id (``/stats`` lists streams by it)."""
        return self.streams.next_id()

    async def attach(
        self,
        topics: Sequence[str],
        last_event_id: str | None,
        send: Send,
        receive: Receive,
        *,
        client: str = "?",
        connection: ConnectionKey | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        subject: str | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> Subscription:
        """Start an SSE stream of ``topics`` on an ASGI ``send``/``receive`` pair.

        Sends the response start (the SSE headers, ``SSE-Fast-Resume`` and
        ``headers``) and the first bytes (``retry``, the position or the
        ``sse-fast-missed`` event, the resumed backlog), joins the fan-out (or
        catches up), and watches ``receive`` for the client leaving. Works with
        an eager ``send`` (Granian) and a plain coroutine one (uvicorn,
        hypercorn): publishes during a pending start are caught up from the
        rings. The caller awaits ``subscription.closed`` (the reason the stream
        ended) and then calls ``detach``; ``subscription.resume`` is the resume
        outcome. ``topics``: valid names (``_publish_checks.check_topic``) or patterns
        (``_matching.py``; ``ValueError`` where the broker cannot serve them).
        ``subject`` names the subscriber in presence (its JWT's ``sub``).
        ``client`` (``"host:port"``: ``/stats``, webhooks) and ``connection`` (to cut,
        ``abort.connection_key``) are given, or read from the ASGI ``scope`` when needed."""
        peer = peer_of(scope, client, connection)

        make = partial(_open, self, send, topics, peer, last_event_id, subject)
        subscription, first = await _prepared(self, topics, make)
        try:
            result = send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *SSE_HEADERS,
                        (RESUME_HEADER_ASGI, subscription.resume.encode()),
                        *headers,
                    ],
                }
            )
            self.send_style.observe(result)
            if not self.send_style.written(result):
                await result  # not eager: publishes meanwhile are caught up from the rings
            self.fanout.start(subscription, first)
            # Each receive() is watched with a callback: a stream costs no task of its own.
            self.watch.arm(subscription, receive)
        except BaseException:
            self.detach(subscription)
            raise
        return subscription

    def detach(self, subscription: Subscription) -> None:
        """The stream is over for its handler (client gone, or returning): free it (idempotent)."""
        self.closer.detach(subscription)

    def close(
        self,
        subscription: Subscription,
        reason: str,
        final: bytes | None = None,
        grace: float | None = None,
    ) -> None:
        """End a stream from the server side (``_closing.py``)."""
        self.closer.close(subscription, reason, final, grace)

    def expire(self, subscription: Subscription) -> None:
        """The subscription's token expired: end the stream, saying so."""
        self.close(subscription, Reason.TOKEN_EXPIRED, final=disconnect_frame(Reason.TOKEN_EXPIRED))

    # ---------------------------------------------------------------- figures
    # (_figures.py: what the worker reports, and presence across workers)

    async def presence(self, topic: str) -> dict[str, Any]:
        """Who is subscribed to ``topic`` (``Figures.presence``)."""
        return await self.figures.presence(topic)

    def report(self, query: dict[str, Any]) -> dict[str, Any]:
        """This worker's figures for a server-wide answer (``Figures.report``)."""
        return self.figures.report(query)

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker's ``report(query)``, through the broker."""
        return await self.broker.gather(query)

    def stats(
        self, with_connections: bool = False, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        """Figures for ``/stats`` (``Figures.stats``)."""
        return self.figures.stats(with_connections, offset, limit)


def _check_patterns(broker: Broker, names: Sequence[str]) -> None:
    """``ValueError`` for topic patterns with a broker that cannot serve them."""
    refusal = patterns_refused(broker, names)
    if refusal is not None:
        raise ValueError(refusal)


async def _prepared(
    hub: Hub,
    names: Sequence[str],
    make: Callable[[Expansion | None], tuple[Subscription, bytes]],
) -> tuple[Subscription, bytes]:
    """The broker prepares the topics of ``names`` (subscribes to new ones and loads their
    history; for patterns, the topics they match where it keeps them, its births
    meanwhile wanted: ``Member.wants``), then ``make`` makes the stream (``_open``)."""
    _check_patterns(hub.broker, names)
    patterns = tuple(name for name in names if is_pattern(name))
    if not patterns:
        waiting = hub.broker.prepare(names)
        if waiting is not None:
            await waiting
        return make(None)
    hub.streams.patterns.opening(patterns, 1)
    try:
        return make(await _prepare_patterns(hub.broker, names, patterns))
    finally:
        hub.streams.patterns.opening(patterns, -1)


async def _prepare_patterns(
    broker: Broker, names: Sequence[str], patterns: Sequence[str]
) -> Expansion | None:
    """A broker that holds only the topics its streams need: the topics ``patterns``
    match where it keeps them (``Broker.expand``), prepared with the names (None: the
    broker stores every topic here)."""
    expanding = broker.expand(patterns)
    if expanding is None:
        return None
    expansion = await expanding
    found = [name for name in expansion.names if pattern_matches(name, patterns)]
    waiting = broker.prepare([*(n for n in names if not is_pattern(n)), *found])
    if waiting is not None:
        await waiting
    return expansion


def _forgotten(
    hub: Hub, patterns: Sequence[str], expansion: Expansion | None
) -> resume.Forgotten | None:
    """A pattern stream's topics gone before it resumes (``Topics.forgotten_by``), and
    those the broker may have lost without trace (``Expansion.gone_up_to``)."""
    if not patterns:
        return None
    return hub.topics.forgotten_by(patterns, 0 if expansion is None else expansion.gone_up_to)


def _topics_for(settings: Settings, broker: Broker, on_drop: Callable[[str], None]) -> Topics:
    """The hub's topics: the newest applied position starts just before the broker's
    first (in each partition, with several)."""
    if broker.partitions == 1:
        return Topics(settings, broker.first_position - 1, on_drop=on_drop)
    starts = [broker.first_position_of(p) - 1 for p in range(broker.partitions)]
    return Topics(settings, 0, broker.partition_of, starts, on_drop)


def _open(
    hub: Hub,
    send: Send,
    names: Sequence[str],
    peer: Peer,
    last_event_id: str | None,
    subject: str | None,
    expansion: Expansion | None = None,
) -> tuple[Subscription, bytes]:
    """A stream of ``names`` made at its resume point (``_resume.py``) and joined
    (``_streams.py``); it and its first bytes, which ``Hub.attach`` writes
    (``FanOut.start``) before the next flush."""
    hub.fanout.flush_pending()  # the positions below are the flushed heads
    now = hub.clock()
    patterns = tuple(name for name in names if is_pattern(name))
    if patterns:
        hub.fanout.patterns_opened()
        exact = [name for name in names if not is_pattern(name)]
        topics: Sequence[Topic] = hub.streams.expand(exact, patterns, now)  # a list: it grows
    else:
        topics = tuple([hub.topics.get(name, now) for name in names])
    broker = hub.broker
    covered = {0} if broker.partitions == 1 else {topic.partition for topic in topics}
    places = None
    over = None
    if patterns and broker.partitions > 1:  # it may gain topics of any partition
        over = resume.PatternsOver(
            max(0 if expansion is None else expansion.complete_up_to, broker.complete_up_to()),
            () if expansion is None else expansion.gone_up_to_in,
            hub.topics.forgotten_over(patterns),
        )
    if len(covered) <= 1 and over is None:  # one partition: as with one sequence
        partition = min(covered, default=0)
        status, cursors, first = resume.starting_point(
            topics,
            last_event_id,
            broker.first_position_of(partition),
            hub.last_position_of(partition),
            broker.lost,
            hub.settings.retry_ms,
            _forgotten(hub, patterns, expansion),
        )
    else:  # several: the stream's id is its cursor (``_cursor.py``)
        status, cursors, first, places = resume.starting_point_over(
            topics,
            last_event_id,
            {p: broker.first_position_of(p) for p in covered},
            {p: hub.last_position_of(p) for p in covered},
            broker.partitions,
            broker.lost,
            hub.settings.retry_ms,
            over,
        )
    subscription = Subscription(
        hub.streams.next_id(),
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
    hub.streams.join(subscription)
    return subscription, first
