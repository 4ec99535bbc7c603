"""One Redis of a member: its client, its pub/sub connection, and the topics held on it.

* ``Connection``: the member's pub/sub connection to one Redis (one URL: a shard,
  or the one Redis), carrying the partitions that Redis holds (``Placement``).
  It subscribes to the topics of those partitions the member holds (``prepare``;
  new topics of one loop iteration together), routes each message to the member,
  or holds it back while the topic's history is read, and replaces a
  subscription that was lost or went stale (``run``). The topics held there are
  its ``HeldTopics`` (``_held_topics.py``); what it read of each of its
  partitions is its ``PartitionRead`` (``states``); whether its Redis is up is its own
  ``Availability``, which it tells; its probes are its own (``_probes.py``).
* Reading (``_read_loop``): ``get_message`` waits for the next message; the rest of
  what that socket read brought is taken from hiredis's buffer at once
  (``_buffered.py``), and the events of held topics among them are delivered to the
  member together (``_deliver``), in order; a birth, a probe's message or a reply of
  another kind has what came before it delivered first.
* A lost or stale subscription is replaced, and the connection's partitions are
  resynced (``History.resync``, ``_history.py``); the other Redis's connections
  are not touched. So is one whose handling raised anything else (a bug, logged
  with its traceback): the task that runs it ends only when the broker closes.
* On a Redis Cluster a connection is one master's (``_rehoming.py``): it uses
  sharded pub/sub (``SSUBSCRIBE``, one command per slot; ``SPUBLISH`` for its
  probes and gathers), and its partitions change when the slot map does
  (``adopt``, ``surrender``, each partition with its ``PartitionRead`` and its held
  topics). Changed partitions make it subscribe and resync again (``moved``);
  a ``sunsubscribe`` the master pushes (a slot it lost), or a subscription lost,
  makes the broker read the slot map again before the next attempt, and a
  connection left with no partition stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..._tasks import cancelled_here, stop_task
from .._sequencing import Sequenced
from ._availability import Availability
from ._buffered import buffered_reader, settle, take
from ._channels import Channels
from ._held_topics import HeldTopics
from ._history import History
from ._new_topics import NewTopics
from ._probes import Probes
from ._scripts import COMMAND_TIMEOUT, close_client, connect
from ._state import Moved, PartitionRead, Reconnect

if TYPE_CHECKING:
    from .. import Membership
    from ._member_options import MemberOptions
    from ._placement import Placement

__all__ = [
    "Connection",
]

log = logging.getLogger("sse_fast.redis")


class Connection:
    """A member's client and pub/sub subscription to one Redis, and the topics held on it."""

    def __init__(
        self,
        options: MemberOptions,
        placement: Placement,
        membership: Membership,
        index: int,
        url: str,
        *,
        client: Callable[[], aioredis.Redis] | None = None,
        refresh: Callable[[], Awaitable[None]] | None = None,
        suspect: Callable[[], None] = lambda: None,
    ) -> None:
        self.options = options
        self.placement = placement
        self.membership = membership
        #: a Cluster's: read the slot map again (before each new attempt to subscribe)
        self._refresh = refresh
        #: the Redis's index in the URL list (or among a Cluster's masters), and its URL
        self.index = index
        self.url = url
        self._new_client = client or (lambda: connect(url))
        #: sharded pub/sub (a Redis Cluster's master): SSUBSCRIBE and SPUBLISH
        self.sharded = options.cluster
        #: the partitions this Redis holds, and what was read of each
        self.partitions = list(placement.partitions_on(index))
        self.states = {partition: PartitionRead() for partition in self.partitions}
        #: the partitions changed (a Cluster's slot map): subscribe and resync again
        self.moved = False
        #: subscriptions replaced
        self.reconnects = 0
        #: up or down: the subscription is live and this Redis answered the last command
        self.availability = Availability()
        self.client: aioredis.Redis | None = None
        self.scripts: dict[str, Any] = {}
        self.history = History(options, placement, membership, self)
        #: the topics held on this Redis
        self.topics = HeldTopics(placement, membership, self)
        self.probes = Probes(options, placement, membership, self, suspect)
        #: the topics born that pattern streams want, told on its partitions' ``born`` channels
        self.new_topics = NewTopics(placement, membership, self)
        self.born: dict[bytes, int] = {}
        #: the channels of probes and gathers this connection subscribes to (``_control``)
        self.control: list[bytes] = []
        self.probe_channel = ""
        self._control()
        self.pubsub: Any = None
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Event | None = None
        self._held_back: dict[str, list[Sequenced]] | None = {}
        #: the subscription's channels: confirmations, releases (``_channels.py``)
        self.channels = Channels(self.sharded, str(self))
        #: a read found another epoch: the subscription is replaced and resynced
        self.epoch_changed = False
        #: events of held topics read and not yet delivered (``_deliver``: at the end of a read)
        self._arrived: list[Sequenced] = []
        #: messages on topics' channels that were not events (``_malformed``), ignored
        self.malformed = 0
        #: the wall clock and time.monotonic() when the read being handled was made: an
        #: event's age (its publish's wall time in its header) is measured against them
        self._clocks = (time.time(), time.monotonic())

    def _control(self) -> None:
        """The probe channel, the node's (gathers: on partition 0's Redis), the births'."""
        if not self.partitions:
            return
        placement = self.placement
        options = self.options
        probe = placement.probe_channel(self.index, options.member_id, options.node)
        node = placement.node_channel(options.node)
        self.born = {placement.born_channel(p): p for p in self.partitions}
        channels = [probe, node] if 0 in self.partitions else [probe]
        self.control = [*(c.encode() for c in dict.fromkeys(channels)), *self.born]
        self.probe_channel = probe

    # ---------------------------------------------------------------- partitions

    def adopt(
        self, partition: int, known: PartitionRead, topics: list[str], born: int | None
    ) -> None:
        """Carry ``partition`` from now on, with its ``PartitionRead``, held ``topics`` and births
        handled (a Cluster's slot map moved it here); resynced at the next attempt."""
        self.partitions = sorted({*self.partitions, partition})
        self.states[partition] = known
        self.topics.take(topics)
        self.new_topics.take(partition, born)
        self.moved = True

    def surrender(self, partition: int) -> tuple[PartitionRead, list[str], int | None]:
        """Stop carrying ``partition``: its ``PartitionRead``, held topics (not loading), births."""
        self.partitions.remove(partition)
        self.moved = True
        held, born = self.topics.give_up(partition), self.new_topics.give_up(partition)
        return self.states.pop(partition), held, born

    async def send(self, channel: str | bytes, data: bytes) -> None:
        """Publish ``data`` on a control channel of this Redis (``SPUBLISH`` on a Cluster)."""
        assert self.client is not None
        if self.sharded:
            await self.client.execute_command("SPUBLISH", channel, data)  # type: ignore[no-untyped-call]
        else:
            await self.client.publish(channel, data)

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
        self.client = self._new_client()
        self.scripts = {}  # registered on this client, not a closed one's
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run())
        self.probes.start()
        return self.ready

    async def close(self) -> None:
        """Stop the subscription, the probes and the history loads, and close the client."""
        for task in (self.task, self.probes.task, *self.topics.loads):
            await stop_task(task)
        await self.new_topics.close()
        await self.drop()
        if self.client is not None:
            await close_client(self.client)
        self.availability.subscription_lost()

    async def run(self) -> None:
        """Subscribe, resync and read messages until the broker closes; a lost or stale
        subscription is replaced after a backoff (50 ms doubling to 1 s)."""
        membership = self.membership
        delay = 0.05
        while not membership.closing:
            try:
                await self._subscribe_all()
                await self._resync()
                delay = 0.05
                if self.ready is not None:
                    self.ready.set()
                await self._read_loop()
            except (TimeoutError, RedisError, OSError, Reconnect) as exc:
                if self.live and not isinstance(exc, Moved):
                    log.error("%s subscription lost (%s): repairing after reconnect", self, exc)
                self.availability.subscription_lost()
            except (Exception, asyncio.CancelledError) as exc:
                if cancelled_here(exc):  # the broker closing: stop
                    raise
                # anything else (a bug, a library's surprise: a CancelledError from a future
                # somebody else cancelled) must not end the subscription for good: this
                # member would hear nothing more while its publishes went on being taken
                log.exception("%s subscription failed (%r): repairing after reconnect", self, exc)
                self.availability.subscription_lost()
            await self.drop()
            if membership.closing:
                return
            if self._refresh is not None and not self.moved:
                await self._refresh()  # a master gone, a slot moved?
            if not self.partitions:  # a Cluster node that holds nothing now
                log.info("%s holds no partition now: its connection stops", self)
                await self._retire()
                if not self.partitions:
                    return  # (no await from here on: a later move finds the task done)
                self._revive()  # partitions came back while it retired
            if self.moved:
                delay = 0.05  # a new slot map, not a failure: at once
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self.reconnects += 1

    async def _retire(self) -> None:
        """Stop probing and close the client (``start`` opens them again)."""
        await stop_task(self.probes.task)
        self.probes.reset()
        client, self.client, self.scripts = self.client, None, {}
        if client is not None:
            with contextlib.suppress(Exception):
                await close_client(client)

    def _revive(self) -> None:
        """A new client and probes, in the running task (``_retire`` undone)."""
        self.client = self._new_client()
        self.probes.start()

    def __str__(self) -> str:
        if self.sharded:
            return f"Redis Cluster master {self.url}"
        shards = self.placement.shards
        return "Redis" if shards == 1 else f"Redis shard {self.index + 1} of {shards}"

    async def drop(self) -> None:
        """Close the subscription; whoever waits for a confirmation is told."""
        pubsub, self.pubsub = self.pubsub, None
        self.probes.reset()  # those not back were sent to this subscription
        self.new_topics.reset()
        self.channels.reset()
        self.channels.fail(ConnectionError("the Redis subscription was lost"))
        if pubsub is not None:
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await pubsub.aclose()
            except Exception:  # its lock held past the limit, Redis gone, ...
                # its socket closed all the same, not left to the garbage collector
                # (a stream writer closed once the loop is gone says so on stderr)
                connection = getattr(pubsub, "connection", None)
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.disconnect(nowait=True)

    @property
    def live(self) -> bool:
        """Subscribed and resynced: messages flow to the member."""
        return self.availability.live

    async def subscribe(self, channels: list[bytes]) -> None:
        """SUBSCRIBE and wait for every confirmation (``Channels.subscribe``)."""
        if self.pubsub is None:
            raise ConnectionError("no Redis subscription")
        await self.channels.subscribe(self.pubsub, channels)

    def unsubscribe(self, channels: list[bytes]) -> None:
        """UNSUBSCRIBE in the background while live (``Channels.release``)."""
        if self.pubsub is not None and self.live:
            self.channels.release(self.pubsub, channels)

    async def _subscribe_all(self) -> None:
        assert self.client is not None
        self._held_back = {}  # everything waits until the repair is done
        self.moved = False
        self._control()
        self.channels.reset()
        self.pubsub = self.client.pubsub()
        reader = asyncio.get_running_loop().create_task(self._confirm_loop())
        try:
            placement = self.placement
            carried = [n for n in self.topics.held if placement.partition_of(n) in self.states]
            await self.subscribe([*self.control, *map(placement.channel, carried)])
            if self.born:  # births the subscription may have missed
                born = await self.new_topics.rescan()
                if born:
                    self.topics.take(born)  # read by the resync
                    await self.subscribe([placement.channel(name) for name in born])
        finally:
            await stop_task(reader)

    async def _resync(self) -> None:
        """After (re)subscribing: repair every held topic, then let the held back through."""
        await self.history.resync()
        held_back, self._held_back = self._held_back or {}, None
        partition_of = self.placement.partition_of
        for topic, items in held_back.items():
            if partition_of(topic) not in self.states:  # it moved: resynced where it went
                continue
            # births told while subscribing: their topics' first events go before these
            out = [item for item in items if not self.new_topics.hold(item)]
            if out:
                self.membership.deliver(out)
        self.availability.subscribed()
        self.new_topics.start()  # births told while subscribing

    async def _confirm_loop(self) -> None:
        """Read while subscribing at (re)connect: confirmations and held-back messages."""
        while not self.membership.closing:
            if self.pubsub is None or not self.pubsub.subscribed:
                await asyncio.sleep(0.005)
                continue
            message = await self.pubsub.get_message(timeout=None)
            if message is None:
                continue
            self._clocks = (time.time(), time.monotonic())
            try:
                self._handle(message)
            except Reconnect as exc:  # e.g. a slot given away while subscribing: said at once
                self.channels.fail(exc)
                raise

    async def _read_loop(self) -> None:
        membership = self.membership
        pubsub = self.pubsub
        # on a Cluster, a move (``adopt``, ``surrender``) is noticed within a quarter second
        interval = self.options.probe_interval
        wait = min(interval / 2, 0.25) if self.sharded else interval / 2
        published = self._published
        while not membership.closing:
            message = await pubsub.get_message(timeout=wait)
            if message is not None:
                self._clocks = (time.time(), time.monotonic())
                self._handle(message)
                # the rest of what that read brought, at once (``_buffered.py``; looked up
                # each time: a reconnect inside redis-py gives its connection a new one)
                while (reader := buffered_reader(pubsub)) is not None:
                    try:
                        other = take(reader, published)
                    finally:  # (a reply hiredis could not parse: what came before it)
                        self._deliver()
                    if other is None:
                        break
                    message = await settle(pubsub, other)
                    if message is not None:
                        self._handle(message)
            self.probes.check()
            if self.new_topics.failed:
                raise Reconnect(f"{self} could not read topics born for pattern streams")
            if self.epoch_changed:
                self.epoch_changed = False
                raise Reconnect(f"a history read found that {self} lost its data")
            if self.moved:
                raise Moved(f"{self}'s partitions changed")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind in ("message", "smessage"):
            self._published(channel, message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            self.channels.confirmed(channel)
        elif kind in ("unsubscribe", "sunsubscribe"):
            self.channels.unsubscribed(channel, kind == "sunsubscribe")
        self._deliver()

    def _published(self, channel: bytes, data: bytes) -> None:
        """A message published on ``channel``: a birth, a topic's event (added to those
        ``_deliver`` hands over together), or a probe's."""
        partition = self.born.get(channel)
        if partition is None:
            topic = self.placement.topic_of(channel)
            if topic is not None:
                self._message(topic, data)
                return
        self._deliver()  # what came before it goes first
        if partition is not None:
            self.new_topics.told(partition, data)
        else:
            self.probes.message(data)

    def _malformed(self, topic: str, data: bytes) -> None:
        """A message on a topic's channel that no publish script wrote (a hand-made
        ``PUBLISH``): ignored, said at the first and at every thousandth."""
        self.malformed += 1
        if self.malformed == 1 or self.malformed % 1000 == 0:
            log.warning(
                "%s: ignored a message on topic %r's channel that is not an sse_fast event "
                "(%d so far; it began %r): publish through a node, "
                "sse_fast.brokers.redis.publish or its script, not PUBLISH",
                self,
                topic,
                self.malformed,
                data[:40],
            )

    def _deliver(self) -> None:
        """Deliver the events of topics that arrived since the last call, in order."""
        if self._arrived:
            arrived, self._arrived = self._arrived, []
            self.membership.deliver(arrived)

    def _message(self, topic: str, data: bytes) -> None:
        head, _, frame = data.partition(b"\n")
        try:
            position, wall, event_id = head.split(b" ", 2)
            now, monotonic = self._clocks  # (read once per read, not per message)
            age = max(0.0, now - int(wall) / 1000)
            item = Sequenced(int(position), event_id.decode(), (topic,), frame, monotonic - age)
        except ValueError:  # not the script's: nothing of the topic's sequence (positions)
            self._malformed(topic, data)
            return
        held_back = self._held_back
        if held_back is not None:
            # (re)subscribing: not "seen" until the resync knows which dataset it is from
            held_back.setdefault(topic, []).append(item)
            return
        state = self.states.get(self.placement.partition_of(topic))
        if state is None:  # pragma: no cover - a channel of another Redis's partition
            return
        state.saw(item.position)
        if not self.new_topics.hold(item):
            self.topics.arrived(topic, item, self._arrived)
