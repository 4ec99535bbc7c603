"""The hub of one worker: the parts, and the few calls that go through them.

A publish goes ``Hub.publish`` (the small ones of a turn of the loop together:
``_publish_group.py``) -> the broker (``brokers/``: sequencing) ->
``FanOut.apply`` (``_topics.py``: storage) -> ``FanOut.flush`` -> each stream's
``send``. A stream comes in through ``Hub.attach`` (opened in ``_opening.py``:
resume in ``_resume.py``; the server's ``send`` style in ``sse_fast/_asgi.py``, the
client leaving watched in ``_disconnect_watch.py``), joins and leaves in ``_streams.py``
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
from .._compression import Coding
from .._control_frames import RESUME_HEADER_ASGI, disconnect_frame
from .._publish_checks import check_distinct_ids, check_topic
from .._tasks import stop_task
from ..brokers import Broker
from ..brokers._sequencing import Sequenced
from ..brokers.local import LocalBroker
from ..protocol import Reason
from ..publishing import PublishRequest
from ..schemas import Schemas, Stream
from ..schemas import load as load_schemas
from ..settings import Settings
from ..settings._checks import split_list
from ..settings._memory import history_budget
from ._breaks import mark_break, mark_missed
from ._closing import Closer
from ._coding import Compression
from ._disconnect_watch import DisconnectWatch
from ._fanout import FanOut
from ._figures import Figures
from ._lifecycle import Lifecycle
from ._matching import PatternStreams
from ._metrics import Metrics
from ._opening import Opening
from ._presence import PresenceNews
from ._publish_group import PublishGroup
from ._streams import Streams
from ._subscription import Subscription, peer_of
from ._topics import Topics
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
        self._on_drain: set[Callable[[], None]] = set()  # ``when_draining``
        #: figures other parts add to this worker's /metrics report (mirror mode's upstream)
        self.reports = tuple(reports)
        self.presence_news = PresenceNews(
            split_list(settings.presence_topics),
            settings.presence_interval,
            self.publish,
            settings.max_topic_length,
        )
        self.webhooks = (
            Webhooks(settings.features, metrics, clock, settings.node_name)
            if settings.webhook_urls
            else None
        )
        listeners = (self.presence_news, self.webhooks, metrics)
        #: the open streams: where they join and leave, and the listeners told
        self.streams = Streams(
            self.topics, clock, [x for x in listeners if x is not None], patterns
        )
        #: the open streams by id (``streams.by_id``; read it)
        self.subscriptions = self.streams.by_id
        self.closer = Closer(settings.streams, metrics, self.send_style, self.streams)
        #: every stream's wait for ``http.disconnect`` (one watch, no object per stream)
        self.watch = DisconnectWatch(self.detach)
        self.fanout = FanOut(
            settings.streams,
            metrics,
            clock,
            self.send_style,
            self.topics,
            self.closer,
            # from the first pattern stream on (``_opening.py``), a topic's first events make
            # it join the pattern streams it matches (and the names' index)
            on_first=self.streams.created,
            # with several partitions: their cursors' rest (``_cursor.py``)
            complete_up_to=broker.complete_up_to if broker.partitions > 1 else None,
        )
        #: how its streams open: topics prepared, then made at their resume point
        self.opening = Opening(
            settings.streams,
            clock,
            broker,
            self.topics,
            self.streams,
            self.fanout,
            self.last_position_of,
        )
        self.lifecycle = Lifecycle(
            settings.streams, clock, self.subscriptions, self.topics, self.fanout, self.closer
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
        #: the codings its streams may be compressed with (``_coding.py``)
        self.compression = Compression(settings.streams)

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
        """Close every stream with a jittered ``retry`` (``when_draining``'s callbacks
        first), cutting what is not out within ``drain_timeout``."""
        for callback in list(self._on_drain):  # e.g. publish streams waiting for a body
            callback()
        await self.lifecycle.drain()

    def when_draining(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the drain starts, before the streams are closed (a
        request waiting for its body stops waiting); returns what forgets it."""
        self._on_drain.add(callback)
        return partial(self._on_drain.discard, callback)

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
        coding: Coding | None = None,
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
        ``abort.connection_key``) are given, or read from the ASGI ``scope`` when needed.
        ``coding``: the stream is compressed with it (``Compression.choose``; one of
        ``compression.codings``): ``Content-Encoding`` says so."""
        peer = peer_of(scope, client, connection)
        writes: Send = send
        if coding is not None:  # every write through its compressing send (``_coding.py``)
            writes = self.compression.stream(send, coding, topics, self.metrics)
            headers = [*headers, (b"content-encoding", coding.name.encode())]
        subscription, first = await self.opening.open(writes, topics, peer, last_event_id, subject)
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


def _topics_for(settings: Settings, broker: Broker, on_drop: Callable[[str], None]) -> Topics:
    """The hub's topics: the newest applied position starts just before the broker's
    first (in each partition, with several); the history budget of one of the node's
    workers."""
    budget = history_budget(settings.streams, settings.workers)[0]
    if broker.partitions == 1:
        return Topics(settings.streams, broker.first_position - 1, on_drop=on_drop, budget=budget)
    starts = [broker.first_position_of(p) - 1 for p in range(broker.partitions)]
    return Topics(settings.streams, 0, broker.partition_of, starts, on_drop, budget=budget)
