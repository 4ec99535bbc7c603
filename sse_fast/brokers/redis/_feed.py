"""The feed: how a member's events arrive from Redis.

* ``Feed``: the member's pub/sub subscription. It subscribes to the topics the
  member holds (``prepare``; new topics of one loop iteration together), routes
  each message to the member, or holds it back while the topic's history is
  read, and replaces a subscription that was lost or went stale (``run``).
  The topics held (``held``) change only here, in ``prepare`` and ``release``;
  the subscription's liveness is told to the member's ``Availability``.
* ``Known``: what the feed has read of the sequence (the newest position seen,
  the horizon, the dataset's epoch, where the member's claims start, and the
  counts of reconnects, repairs and breaks), changed only by its named
  operations, which the feed and the history reads call.
* ``History``: reads of the topics' streams (``READ_SCRIPT``) and what they
  mean: a new topic's floor (never below the dataset's, ``sse:floor``) and
  history, a repaired topic's gap, and at each (re)subscription the resync
  that checks whether Redis lost data and, if it did, says the break at the
  dataset's floor and delivers what Redis has after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import RedisError

from ..._tasks import stop_task
from ...protocol import Reason
from .._sequencing import Sequenced
from ._scripts import COMMAND_TIMEOUT, channel_prefix

if TYPE_CHECKING:
    from ._broker import RedisBroker

__all__ = [
    "LOAD_CHUNK",
    "Feed",
    "History",
    "Known",
    "Read",
    "Reconnect",
    "ignore_result",
]

log = logging.getLogger("sse_fast.redis")

#: topics per history read when subscribing (so Redis is not blocked long)
LOAD_CHUNK = 256  # topics per history read when subscribing

#: a topic's stream as read: (max deleted position, stream length, entries oldest first)
TopicRead = tuple[int, int, list[Sequenced]]


class Read(NamedTuple):
    """What one ``READ_SCRIPT`` call says."""

    #: the newest position handed out
    position: int
    #: Redis time in microseconds
    now: int
    #: the dataset's epoch
    epoch: str
    #: no position at or below it is in this dataset's history (``advance.lua``)
    floor: int
    #: per topic read
    topics: dict[str, TopicRead]


class Reconnect(Exception):
    """The subscription must be replaced (stale, or silently reconnected)."""


class Known:
    """What a member's feed has read of the sequence; changed only by these operations."""

    def __init__(self) -> None:
        #: the newest position this member has seen handed out (reads, messages)
        self.seen = 0
        #: a position every event up to which is known to exist (the newest one read)
        self.horizon = 0
        #: the dataset's epoch, once read
        self.epoch: str | None = None
        #: the oldest position this member may claim to know (claims are per topic here,
        #: each loaded topic's floor: every position is ours until a break)
        self.first_position = 1
        #: subscriptions replaced, resyncs that found nothing lost, and breaks said
        self.reconnects = 0
        self.repairs = 0
        self.history_breaks = 0

    def saw(self, position: int) -> None:
        """A live message at ``position`` reached the member."""
        if position > self.seen:
            self.seen = position

    def read_up_to(self, position: int) -> None:
        """A history read said ``position`` is the newest handed out."""
        self.seen = max(self.seen, position)
        self.horizon = max(self.horizon, position)

    def resynced(self, read: Read) -> None:
        """A resync read ``read``: its dataset is the member's now."""
        self.epoch = read.epoch
        self.read_up_to(read.position)

    def broke(self, floor: int) -> None:
        """Redis lost data: the member's claims start after the dataset's new ``floor``."""
        self.history_breaks += 1
        self.first_position = floor + 1

    def repaired(self) -> None:
        """A resync found nothing lost."""
        self.repairs += 1

    def reconnecting(self) -> None:
        """The subscription is replaced."""
        self.reconnects += 1


class Feed:
    """A member's pub/sub subscription and the topics it holds."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.known = Known()
        #: topics this member is subscribed to (or subscribing); changed only here
        self.held: set[str] = set()
        self.history = History(broker, self)
        self.channel_prefix = channel_prefix(broker.prefix)
        self.pubsub: Any = None
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Event | None = None
        self._loading: dict[str, asyncio.Future[None]] = {}
        #: topics waiting to be loaded together, and the loads under way
        self._batch: tuple[asyncio.Future[None], list[str]] | None = None
        self.loads: set[asyncio.Task[None]] = set()
        #: live messages of topics being loaded, applied after their history
        self._loading_back: dict[str, list[Sequenced]] = {}
        self._held_back: dict[str, list[Sequenced]] | None = {}
        self._confirmed: set[bytes] = set()
        self._confirm_waiters: dict[bytes, asyncio.Future[None]] = {}
        self._release: set[str] = set()
        self._release_scheduled = False
        #: a read found another epoch: the subscription is replaced and resynced
        self.epoch_changed = False

    # ---------------------------------------------------------------- subscription

    def start(self) -> asyncio.Event:
        """Run the subscription; the event is set once it is first live."""
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self.ready

    async def run(self) -> None:
        """Subscribe, resync and read messages until the broker closes; a lost or stale
        subscription is replaced after a backoff (50 ms doubling to 1 s)."""
        broker = self.broker
        delay = 0.05
        while not broker.closing:
            try:
                await self._subscribe_all()
                await self._resync()
                delay = 0.05
                if self.ready is not None:
                    self.ready.set()
                await self._read_loop()
            except (TimeoutError, RedisError, OSError, Reconnect) as exc:
                if self.live:
                    log.error("Redis subscription lost (%s): repairing after reconnect", exc)
                broker.availability.subscription_lost()
            await self.drop()
            if broker.closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self.known.reconnecting()

    async def drop(self) -> None:
        """Close the subscription; whoever waits for a confirmation is told."""
        pubsub, self.pubsub = self.pubsub, None
        self._confirmed = set()
        for waiter in self._confirm_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the Redis subscription was lost"))
                waiter.exception()  # whoever waits gets it; nobody may be waiting
        self._confirm_waiters = {}
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), COMMAND_TIMEOUT)

    @property
    def live(self) -> bool:
        """Subscribed and resynced: messages flow to the member."""
        return self.broker.availability.live

    def channel(self, name: str) -> bytes:
        """The pub/sub channel of topic ``name``."""
        return self.channel_prefix + name.encode()

    async def _subscribe(self, channels: list[bytes]) -> None:
        """SUBSCRIBE and wait for every confirmation (the reader sets them)."""
        if self.pubsub is None:
            raise ConnectionError("no Redis subscription")
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter = self._confirm_waiters.get(channel)
            if waiter is None or waiter.done():
                waiter = self._confirm_waiters[channel] = loop.create_future()
            waiters.append(waiter)
        for start in range(0, len(channels), 512):
            await self.pubsub.subscribe(*channels[start : start + 512])
        await asyncio.wait_for(asyncio.gather(*waiters), COMMAND_TIMEOUT * 2)

    async def _subscribe_all(self) -> None:
        broker = self.broker
        assert broker.client is not None
        self._held_back = {}  # everything waits until the repair is done
        self.pubsub = broker.client.pubsub()
        reader = asyncio.get_running_loop().create_task(self._confirm_loop())
        try:
            channels = [broker.node_channel.encode(), *(self.channel(n) for n in self.held)]
            await self._subscribe(channels)
        finally:
            await stop_task(reader)

    async def _resync(self) -> None:
        """After (re)subscribing: repair every held topic from its stream, then
        let the held-back messages through."""
        await self.history.resync()
        held_back, self._held_back = self._held_back or {}, None
        for items in held_back.values():
            self.broker.deliver(items)
        self.broker.availability.subscribed()

    async def _confirm_loop(self) -> None:
        """Read while subscribing at (re)connect: confirmations and held-back messages."""
        while not self.broker.closing:
            if self.pubsub is None or not self.pubsub.subscribed:
                await asyncio.sleep(0.005)
                continue
            message = await self.pubsub.get_message(timeout=None)
            if message is not None:
                self._handle(message)

    async def _read_loop(self) -> None:
        broker = self.broker
        pubsub = self.pubsub
        while not broker.closing:
            message = await pubsub.get_message(timeout=broker.probe_interval / 2)
            if message is not None:
                self._handle(message)
            broker.probes.check()
            if self.epoch_changed:
                self.epoch_changed = False
                raise Reconnect("a history read found that Redis lost its data")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "message":
            if channel.startswith(self.channel_prefix):
                self._message(channel[len(self.channel_prefix) :].decode(), message["data"])
            else:
                self.broker.probes.message(message["data"])
        elif kind == "subscribe":
            if channel in self._confirmed:
                # redis-py reconnected and subscribed again by itself: whatever was
                # published meanwhile is lost to this connection; start over cleanly
                raise Reconnect("the subscription reconnected by itself")
            self._confirmed.add(channel)
            waiter = self._confirm_waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "unsubscribe":
            self._confirmed.discard(channel)

    def _message(self, topic: str, data: bytes) -> None:
        broker = self.broker
        head, _, frame = data.partition(b"\n")
        position, wall, event_id = head.split(b" ", 2)
        age = max(0.0, time.time() - int(wall) / 1000)
        item = Sequenced(int(position), event_id.decode(), (topic,), frame, time.monotonic() - age)
        held_back = self._held_back
        if held_back is not None:
            # (re)subscribing: not "seen" until the resync knows which dataset it is from
            held_back.setdefault(topic, []).append(item)
            return
        self.known.saw(item.position)
        if topic in self._loading:
            self._loading_back.setdefault(topic, []).append(item)
        elif topic in self.held:
            broker.deliver([item])

    # ---------------------------------------------------------------- topics

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        """Subscribe to the topics of ``names`` not held yet and read their history (the new topics
        of one loop iteration together); an awaitable that ends once they and any still loading are
        ready (``PublishError`` 503 while the subscription is not live), or None when there is
        nothing to wait for."""
        new = [name for name in names if name not in self.held]
        loading = [self._loading[name] for name in names if name in self._loading]
        if not new and not loading:
            return None
        return self._prepare(new, loading)

    async def _prepare(self, new: list[str], loading: list[asyncio.Future[None]]) -> None:
        if new:
            if not self.live:
                raise self.broker.unavailable_error("cannot subscribe to new topics")
            # New topics of one loop iteration (a connection storm) are loaded together:
            # one SUBSCRIBE and one history read, not a Redis connection each.
            loop = asyncio.get_running_loop()
            if self._batch is None:
                self._batch = (loop.create_future(), [])
                loop.call_soon(self._start_batch)
            future, names = self._batch
            for name in new:
                self.held.add(name)
                self._loading[name] = future
                names.append(name)
            loading = [*loading, future]
        for waiting in loading:
            await asyncio.shield(waiting)

    def _start_batch(self) -> None:
        if self._batch is None:  # pragma: no cover - scheduled once per batch
            return
        future, names = self._batch
        self._batch = None
        task = asyncio.get_running_loop().create_task(self._run_batch(future, names))
        self.loads.add(task)
        task.add_done_callback(self.loads.discard)

    async def _run_batch(self, future: asyncio.Future[None], names: list[str]) -> None:
        try:
            await self._load(names)
        except BaseException as exc:
            for name in names:
                if self._loading.get(name) is future:
                    self.held.discard(name)
                    self._loading.pop(name, None)
                    self._loading_back.pop(name, None)
            if not future.done():
                error = self.broker.unavailable_error(f"subscribing failed: {exc!r}")
                future.set_exception(error)
                future.exception()  # whoever waits gets it; nobody may be waiting
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        future.set_result(None)

    async def _load(self, names: list[str]) -> None:
        broker = self.broker
        await self._subscribe([self.channel(name) for name in names])
        for start in range(0, len(names), LOAD_CHUNK):  # Redis is not blocked long
            chunk = names[start : start + LOAD_CHUNK]
            read = await self.history.read(dict.fromkeys(chunk))
            if read.epoch != self.known.epoch:
                # Redis lost its data and the subscription did not notice (a FLUSHALL):
                # the resync that tells the streams comes first
                self.epoch_changed = True
                raise ConnectionError("Redis lost its data: the node repairs first")
            self.known.read_up_to(read.position)
            for name in chunk:
                self.history.apply(name, None, read)
                self._loading.pop(name, None)
                waiting = self._loading_back.pop(name, [])
                if waiting:
                    broker.deliver(waiting)

    def release(self, name: str) -> None:
        """Drop topic ``name`` (not while it loads): it is unsubscribed at the loop's next turn,
        with the others released meanwhile."""
        if name not in self.held or name in self._loading:
            return
        self.held.discard(name)
        self._release.add(name)
        if not self._release_scheduled:
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_release)

    def _send_release(self) -> None:
        self._release_scheduled = False
        names = [name for name in self._release if name not in self.held]
        self._release.clear()
        if names and self.pubsub is not None and self.live:
            task = asyncio.get_running_loop().create_task(
                self.pubsub.unsubscribe(*(self.channel(name) for name in names))
            )
            task.add_done_callback(ignore_result)


class History:
    """Reads of the topics' streams, and what they mean to the member."""

    def __init__(self, broker: RedisBroker, feed: Feed) -> None:
        self.broker = broker
        self.feed = feed

    async def read(self, froms: dict[str, int | None]) -> Read:
        """The sequence, and per topic: the max deleted position, the stream
        length, and its entries after ``froms[topic]`` (or the newest
        ``load_frames``), oldest first."""
        broker = self.broker
        args: list[Any] = [broker.prefix, broker.load_frames, os.urandom(8).hex()]
        names = list(froms)
        for name in names:
            start = froms[name]
            args += [name, "" if start is None else str(start)]
        reply = await broker.read_script(keys=broker.keys, args=args)
        return _parse_read(reply, names)

    async def resync(self) -> None:
        """After (re)subscribing: check the epoch, and repair every held topic
        from its stream (after telling the streams what Redis lost)."""
        broker = self.broker
        known = self.feed.known
        member = broker.member
        held = sorted(self.feed.held)
        froms: dict[str, int | None] = {name: member.newest_position(name) for name in held}
        read = await self.read(froms)
        lost = None
        if known.epoch is not None and read.epoch != known.epoch:
            lost = Reason.REDIS_RESTARTED
            log.warning("Redis lost its data (epoch changed): open streams are told")
        elif read.position < known.seen and not broker.wait_replicas:
            # a failover to a replica that had not received every event we saw
            lost = Reason.REDIS_LOST_WRITES
            log.warning(
                "Redis is behind events this node saw (position %d < %d: a failover to a "
                "replica that lagged; see --redis-wait-replicas): open streams are told",
                read.position,
                known.seen,
            )
        if lost is not None:
            # Nothing after the newest position we hold or saw can be vouched for: the
            # dataset's floor goes above it (ids we gave out never resolve to new events
            # there, on any node), the streams are told at the floor, and what Redis has
            # after it (published since it came back) follows.
            above = max(member.last_position, known.seen)
            floor = await broker.advance_script(
                keys=broker.keys, args=[broker.prefix, above, read.epoch]
            )
            if floor is None:
                raise Reconnect("Redis lost its data again during the repair")
            known.broke(int(floor))
            member.rejoined(known.first_position, lost)
        elif known.epoch is not None:
            known.repaired()
        for name in held:
            after = froms[name] if lost is None else known.first_position - 1
            self.apply(name, after, read)
        known.resynced(read)
        broker.availability.answered()

    def apply(self, name: str, since: int | None, read: Read) -> None:
        """Give the member topic ``name``'s history in ``read``, what is after
        ``since`` (None: the topic is new to the member, and the read gives its
        floor too)."""
        broker = self.broker
        deleted, length, items = read.topics[name]
        if since is None:  # a topic new to this member: its floor, then its history
            horizon = read.now - int(broker.history_age * 1_000_000)
            floor = max(deleted, horizon, read.floor)
            if items and length > len(items):
                floor = max(floor, items[0].position - 1)
            broker.member.load(name, floor, items)
            return
        # repairing: were events after ``since`` trimmed before we could read them?
        lost = deleted if deleted > since else 0
        if items and len(items) == broker.load_frames and items[0].position - 1 > since:
            lost = max(lost, items[0].position - 1)
        if lost:
            broker.member.missed([name], lost, Reason.REDIS_HISTORY_TRIMMED)
        items = [item for item in items if item.position > since]
        if items:
            broker.deliver(items)


def _parse_read(reply: list[Any], names: list[str]) -> Read:
    """``READ_SCRIPT``'s reply for topics ``names``."""
    out = {}
    clock = time.monotonic()
    for k, name in enumerate(names):
        deleted, length, entries = reply[4 + 3 * k : 7 + 3 * k]
        items = []
        for stream_id, fields in reversed(entries):
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            age = max(0.0, time.time() - int(values[b"w"]) / 1000)
            items.append(
                Sequenced(
                    _position(stream_id),
                    values[b"i"].decode(),
                    (name,),
                    values[b"f"],
                    clock - age,
                )
            )
        out[name] = (_position(deleted), int(length), items)
    return Read(int(reply[0]), int(reply[1]), reply[2].decode(), int(reply[3]), out)


def _position(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.partition("-")[0])


def ignore_result(task: asyncio.Task[Any]) -> None:
    """A done callback for a background command nobody waits for."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("Redis background command failed: %s", task.exception())
