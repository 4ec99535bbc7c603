"""One Redis of a member: its client, its pub/sub connection, and the topics held on it.

* ``Connection``: the member's pub/sub connection to one Redis (one URL: a shard,
  or the one Redis), carrying the partitions that Redis holds (``Placement``).
  It subscribes to the topics of those partitions the member holds (``prepare``;
  new topics of one loop iteration together), routes each message to the member,
  or holds it back while the topic's history is read, and replaces a
  subscription that was lost or went stale (``run``). The topics held there are
  its ``Holding`` (``_holding.py``); what it read of each of its
  partitions is its ``Known`` (``states``); whether its Redis is up is its own
  ``Availability``, which it tells; its probes are its own (``_probes.py``).
* A lost or stale subscription is replaced, and the connection's partitions are
  resynced (``History.resync``, ``_history.py``); the other Redis's connections
  are not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..._tasks import stop_task
from .._sequencing import Sequenced
from ._availability import Availability
from ._history import History
from ._holding import Holding
from ._probes import Probes
from ._scripts import COMMAND_TIMEOUT, connect
from ._state import Known, Reconnect

if TYPE_CHECKING:
    from ._broker import RedisBroker

__all__ = [
    "Connection",
]

log = logging.getLogger("sse_fast.redis")


class Connection:
    """A member's client and pub/sub subscription to one Redis, and the topics held on it."""

    def __init__(self, broker: RedisBroker, index: int, url: str) -> None:
        self.broker = broker
        #: the Redis's index in the URL list, and its URL
        self.index = index
        self.url = url
        placement = broker.placement
        #: the partitions this Redis holds, and what was read of each
        self.partitions = placement.partitions_on(index)
        self.states = {partition: Known() for partition in self.partitions}
        #: subscriptions replaced
        self.reconnects = 0
        #: up or down: the subscription is live and this Redis answered the last command
        self.availability = Availability()
        self.client: aioredis.Redis | None = None
        self.scripts: dict[str, Any] = {}
        self.history = History(broker, self)
        #: the topics held on this Redis
        self.holding = Holding(broker, self)
        self.probes = Probes(broker, self)
        node = placement.node_channel(broker.node)
        probe = placement.probe_channel(index, broker.member_id, broker.node)
        #: the channels of probes and gathers this connection subscribes to
        self.control = [c.encode() for c in dict.fromkeys([probe, node] if index == 0 else [probe])]
        self.probe_channel = probe
        self.pubsub: Any = None
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Event | None = None
        self._held_back: dict[str, list[Sequenced]] | None = {}
        self._confirmed: set[bytes] = set()
        self._confirm_waiters: dict[bytes, asyncio.Future[None]] = {}
        #: a read found another epoch: the subscription is replaced and resynced
        self.epoch_changed = False

    def script(self, text: str) -> Any:
        """The client's registered script of ``text`` (``EVALSHA``, loaded when missing)."""
        found = self.scripts.get(text)
        if found is None:
            assert self.client is not None
            found = self.scripts[text] = self.client.register_script(text)
        return found

    # ---------------------------------------------------------------- subscription

    def start(self) -> asyncio.Event:
        """Connect, run the subscription and probe it; the event is set once it is first live."""
        self.client = connect(self.url)
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run())
        self.probes.start()
        return self.ready

    async def close(self) -> None:
        """Stop the subscription, the probes and the history loads, and close the client."""
        for task in (self.task, self.probes.task, *self.holding.loads):
            await stop_task(task)
        await self.drop()
        if self.client is not None:
            await self.client.aclose()
        self.availability.subscription_lost()

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
                    log.error("%s subscription lost (%s): repairing after reconnect", self, exc)
                self.availability.subscription_lost()
            await self.drop()
            if broker.closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self.reconnects += 1

    def __str__(self) -> str:
        shards = self.broker.placement.shards
        return "Redis" if shards == 1 else f"Redis shard {self.index + 1} of {shards}"

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
        return self.availability.live

    async def subscribe(self, channels: list[bytes]) -> None:
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
        assert self.client is not None
        self._held_back = {}  # everything waits until the repair is done
        self.pubsub = self.client.pubsub()
        reader = asyncio.get_running_loop().create_task(self._confirm_loop())
        try:
            channel = self.broker.placement.channel
            await self.subscribe([*self.control, *(channel(n) for n in self.holding.held)])
        finally:
            await stop_task(reader)

    async def _resync(self) -> None:
        """After (re)subscribing: repair every held topic from its stream, then
        let the held-back messages through."""
        await self.history.resync()
        held_back, self._held_back = self._held_back or {}, None
        for items in held_back.values():
            self.broker.deliver(items)
        self.availability.subscribed()

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
            self.probes.check()
            if self.epoch_changed:
                self.epoch_changed = False
                raise Reconnect(f"a history read found that {self} lost its data")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "message":
            topic = self.broker.placement.topic_of(channel)
            if topic is not None:
                self._message(topic, message["data"])
            else:
                self.probes.message(message["data"])
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
        state = self.states.get(broker.placement.partition_of(topic))
        if state is None:  # pragma: no cover - a channel of another Redis's partition
            return
        state.saw(item.position)
        self.holding.arrived(topic, item)
