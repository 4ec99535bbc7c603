"""``RedisBroker``: one member (a worker of a node) of the sequences kept in Redis.

The broker connects and closes, says whether it can publish, publishes, and
reports. It has one ``Connection`` per Redis it was given (``_connection.py``:
a client, a pub/sub subscription, the topics held there, and what was read of
the partitions that Redis holds); which Redis holds which partition, and what
the keys are called, is its ``Placement`` (``_placement.py``). One URL and one
partition is one sequence with today's keys, published by one script call here;
otherwise batches go over the partitions (``_publishing.py``). Each piece of the
member's state has one owner, which alone changes it, through named operations;
the others read it or ask:

* each connection: the topics held on its Redis, what it read of each of its
  partitions (``PartitionRead``: the newest position seen, the horizon, the epoch,
  ``first_position``, the counts of repairs and breaks), which the broker's
  ``first_position_of``, ``horizon_of`` and ``stats`` read; and its
  ``Availability`` (``_availability.py``): up or down, told by its
  subscription, and by the publishes, probes and resyncs on that Redis;
* the broker: its settings, the placement, and ``closing``.

The broker is ``available`` while at least one Redis is up, and unavailable
(``unavailable_for``) while every one is down.

On a Redis Cluster (``redis-cluster://``) the connections are one per master,
made from the slot map at start, and the placement follows the map
(``_rehoming.py``); publishes use ``SPUBLISH`` and subscriptions ``SSUBSCRIBE``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

import redis.asyncio as aioredis

from ..._tasks import stop_task
from ...publishing import PublishError, PublishRequest
from .. import Broker, Expansion
from ._availability import Availability
from ._cluster import SCHEMES, Topology
from ._connection import Connection
from ._new_topics import complete_up_to, read_directory
from ._partitions import check_partitions
from ._placement import Placement
from ._presence_store import presence_of, store_presence
from ._probes import NodeGather
from ._publishing import WAIT_MS, ShardedPublisher, publish_one_sequence
from ._rehoming import Rehoming
from ._scripts import PUBLISH_SCRIPT, node_channel, sequence_keys
from ._state import PartitionRead

__all__ = [
    "RETRY_AFTER",
    "WAIT_MS",
    "RedisBroker",
]

log = logging.getLogger("sse_fast.redis")

#: seconds a client refused while Redis is away is told to wait (``Retry-After``)
RETRY_AFTER = 1.0
#: what a member has read before it connected (never changed: ``state`` hands it out read-only)
_NOTHING_READ = PartitionRead()


class RedisBroker(Broker):
    """A member (one worker of one node) of the sequences kept in one Redis or several."""

    stores_every_topic = False
    retry_after = RETRY_AFTER

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        partitions: int = 1,
        prefix: str = "sse:",
        history_frames: int = 1000,
        history_age: float = 86400.0,
        probe_interval: float = 5.0,
        load_frames: int = 1024,
        node: str | None = None,
        workers: int = 1,
        wait_replicas: int = 0,
    ) -> None:
        super().__init__()
        urls = (url,) if isinstance(url, str) else tuple(url)
        if not urls or len(set(urls)) != len(urls):
            raise ValueError(f"RedisBroker({url!r}): give one URL, or the shards' URLs once each")
        #: a Redis Cluster (one ``redis-cluster://`` URL): one connection per master
        self.cluster = urls[0].startswith(SCHEMES)
        if self.cluster and len(urls) > 1:
            raise ValueError(
                f"RedisBroker({url!r}): a Redis Cluster is one URL (its seeds separated by "
                "commas), not one of several shards"
            )
        if check_partitions(partitions) < len(urls):
            raise ValueError(
                f"{partitions} partitions over {len(urls)} shards: give at least one partition "
                "per shard (--redis-partitions)"
            )
        #: the Redis URLs (shards, in order), and the first
        self.urls = urls
        self.url = urls[0]
        self.partitions = partitions
        self.prefix = prefix
        self.history_frames = history_frames
        self.history_age = history_age
        self.probe_interval = probe_interval
        self.load_frames = load_frames
        self.node = node or uuid.uuid4().hex[:12]
        self.workers = workers
        self.wait_replicas = wait_replicas
        self.member_id = uuid.uuid4().hex[:12]
        self.keys = sequence_keys(prefix)
        self.node_channel = node_channel(prefix, self.node)
        self.closing = False
        #: a Cluster's slot map and connections per master (made at ``start``)
        self.rehoming: Rehoming | None = None
        self.connections: list[Connection] = []
        if self.cluster:
            self.placement = Placement(prefix, partitions, 1, owners=[0] * partitions)
            self.rehoming = Rehoming(self, Topology(self.url, partitions))
        else:
            self.placement = Placement(prefix, partitions, len(urls))
            #: one per Redis (in the URLs' order; a Cluster's masters in the order met): the
            #: one owner of what is held and read there
            self.connections = [Connection(self, index, u) for index, u in enumerate(urls)]
        self.node_gather = NodeGather(self)
        self.sharded = None if self.placement.single else ShardedPublisher(self)
        self.client: aioredis.Redis | None = None
        self.publish_script: Any = None

    def partition_of(self, name: str) -> int:
        """The partition of topic ``name``: FNV-1a 64 of its UTF-8 bytes, modulo ``partitions``."""
        return self.placement.partition_of(name)

    def state(self, partition: int) -> PartitionRead:
        """What this member read of ``partition`` (owned by the connection that carries it;
        nothing yet before a Cluster's connections are made at ``start``)."""
        if not self.connections:
            return _NOTHING_READ
        return self.connections[self.placement.shard_of(partition)].states[partition]

    def first_position_of(self, partition: int) -> int:
        """The oldest position of ``partition`` this member may claim to know."""
        return self.state(partition).first_position

    def horizon_of(self, partition: int) -> int:
        """The newest position of ``partition`` a history read found handed out."""
        return self.state(partition).horizon

    @property
    def feed(self) -> Connection:
        """The first connection (the one Redis's, with one sequence)."""
        return self.connections[0]

    @property
    def availability(self) -> Availability:
        """The first connection's up or down (the one Redis's, with one sequence)."""
        return self.connections[0].availability

    @property
    def first_position(self) -> int:  # type: ignore[override]  # read-only: the feed moves it
        """The oldest position this member may claim to know (raised by a break)."""
        if self.partitions == 1:
            return self.state(0).first_position
        return min(self.first_position_of(p) for p in range(self.partitions))

    @property
    def horizon(self) -> int:  # type: ignore[override]  # read-only: the feed moves it
        """The newest position a history read found handed out (of any partition)."""
        if self.partitions == 1:
            return self.state(0).horizon
        return max(self.horizon_of(p) for p in range(self.partitions))

    # ---------------------------------------------------------------- running

    async def start(self) -> None:
        """Connect, subscribe and start probing; ``ConnectionError`` when no subscription is live
        within 10 s (a Redis not live by then goes on trying, and is said in a warning)."""
        if self.rehoming is not None:
            try:
                await self.rehoming.start()
            except ConnectionError as exc:
                await self.close()
                raise ConnectionError(
                    f"cannot use the Redis Cluster at {_shown(self.url)}: {exc}"
                ) from None
        for connection in self.connections:
            connection.start()
        self.client = self.feed.client
        if self.placement.single:
            assert self.client is not None
            self.publish_script = self.client.register_script(PUBLISH_SCRIPT)
        await self._ready(deadline=asyncio.get_running_loop().time() + 10)

    async def _ready(self, deadline: float) -> None:
        """Wait until every connection carrying partitions is live (on a Cluster the map may
        add or retire connections meanwhile), or the deadline; ``ConnectionError`` when none
        is live by then, a warning for each that is not."""
        loop = asyncio.get_running_loop()
        while (waiting := [c for c in self.carrying if not _live(c)]) and loop.time() < deadline:
            waits = [asyncio.ensure_future(c.ready.wait()) for c in waiting if c.ready]
            if not waits:  # (every connection carrying partitions was started)
                await asyncio.sleep(0.05)
                continue
            _, pending = await asyncio.wait(
                waits,
                timeout=min(0.25, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in pending:
                waiter.cancel()
        if not any(_live(c) for c in self.connections):
            await self.close()
            raise ConnectionError(
                f"cannot reach Redis at {' '.join(map(_shown, self.urls))} (is redis-server "
                "running? check --redis-url)"
            ) from None
        for connection in self.carrying:
            if not _live(connection):
                log.warning(
                    "%s (%s) is not reachable: its partitions are unavailable until it is",
                    connection,
                    connection.url,
                )

    async def close(self) -> None:
        """Stop the subscriptions, the probes and the history loads, and close the clients."""
        self.closing = True
        if self.rehoming is not None:
            await stop_task(self.rehoming.close())
            await self.rehoming.topology.close()
        for connection in self.connections:
            await connection.close()

    # ---------------------------------------------------------------- availability

    @property
    def available(self) -> bool:
        """Whether a subscription is live and its Redis answered the last command."""
        return any(connection.availability.up for connection in self.carrying)

    @property
    def partitions_down(self) -> int:
        """How many partitions are on a Redis (a shard, a Cluster master) that is down now."""
        return sum(len(c.partitions) for c in self.carrying if not c.availability.up)

    @property
    def carrying(self) -> list[Connection]:
        """The connections that carry partitions (on a Cluster, a master that left the map
        carries none)."""
        return [c for c in self.connections if c.partitions]

    @property
    def unavailable_for(self) -> float:
        """Seconds since every Redis became unavailable (0 while one is available)."""
        downs = [connection.availability.down_for() for connection in self.carrying]
        if not downs:
            return 0.0
        return 0.0 if 0.0 in downs else min(downs)

    def suspect(self) -> None:
        """A command met a sign that a Cluster's slot map moved (``MOVED``, no answer): read it
        again in the background (nothing without a Cluster)."""
        if self.rehoming is not None:
            self.rehoming.suspect()

    def unavailable_error(self, why: str) -> PublishError:
        """The 503 that refuses a publish or a stream while Redis is away."""
        return PublishError(
            f"Redis unavailable ({why}); try again shortly", status=503, retry_after=RETRY_AFTER
        )

    # ---------------------------------------------------------------- topics, nodes

    def connection_of(self, name: str) -> Connection:
        """The connection to the Redis that holds topic ``name``."""
        placement = self.placement
        return self.connections[placement.shard_of(placement.partition_of(name))]

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        """Subscribe to the topics of ``names`` this member does not hold yet and load their
        history (``HeldTopics.prepare``, per Redis); None when every one is held and loaded."""
        if len(self.connections) == 1:
            return self.connections[0].topics.prepare(names)
        by_connection: dict[int, list[str]] = {}
        for name in names:
            by_connection.setdefault(self.connection_of(name).index, []).append(name)
        waits = [self.connections[i].topics.prepare(mine) for i, mine in by_connection.items()]
        found = [waiting for waiting in waits if waiting is not None]
        if not found:
            return None
        return _all(found)

    def complete_up_to(self) -> int:
        """In every partition, every topic born at or below this position that this member's
        pattern streams want was delivered (``NewTopics.done``)."""
        return complete_up_to(self)

    def expand(self, patterns: Sequence[str]) -> Awaitable[Expansion]:
        """The topics in Redis's directory whose names start with the literal prefixes of
        ``patterns`` (``_new_topics.read_directory``); ``PublishError`` 503 while Redis is away."""
        return read_directory(self, patterns)

    def release(self, name: str) -> None:
        """Unsubscribe from topic ``name`` (``HeldTopics.release``)."""
        self.connection_of(name).topics.release(name)

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker of this node, through the node's channel; this worker
        alone when Redis is away."""
        return await self.node_gather.gather(query)

    async def store_presence(self, figures: dict[str, dict[str, Any]]) -> None:
        """Write this worker's presence figures of these topics to Redis; ``RuntimeError`` while
        a Redis holding some of them is away (the others' are written)."""
        await store_presence(self, figures)

    async def read_presence(self, topic: str) -> list[dict[str, Any]] | None:
        """Every live worker's presence figures of ``topic``, read from Redis; ``RuntimeError``
        while its Redis is away."""
        return await presence_of(self, self.connection_of(topic)).read(topic)

    # ---------------------------------------------------------------- publishing

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Sequence ``requests`` in Redis (one script call per partition) and return their ids;
        ``PublishError`` 400 for a refused batch, 503 while Redis is away, does not answer, or
        (with ``wait_replicas``) too few replicas confirmed it."""
        if self.sharded is not None:
            return await self.sharded.publish(requests)
        return await publish_one_sequence(self, requests)

    def stats(self) -> dict[str, Any]:
        """``/stats``' ``redis`` section: connected, node, topics subscribed, reconnects, repairs
        and history breaks; with partitions, the shards and partitions down too."""
        states = [state for c in self.connections for state in c.states.values()]
        section: dict[str, Any] = {
            "connected": self.available,
            "node": self.node,
            "topics_subscribed": sum(len(c.topics.held) for c in self.connections),
            "reconnects": sum(c.reconnects for c in self.connections),
            "repairs": sum(state.repairs for state in states),
            "history_breaks": sum(state.history_breaks for state in states),
        }
        # topics born in Redis held for pattern streams
        section["pattern_births_adopted"] = sum(c.new_topics.adopted for c in self.connections)
        if self.rehoming is not None:
            down = [c for c in self.carrying if not c.availability.up]
            section["partitions"] = self.partitions
            section["cluster_masters"] = [c.url for c in self.carrying]
            section["cluster_masters_down"] = [c.url for c in down]
            section["cluster_map_moves"] = self.rehoming.moves
            section["partitions_down"] = sorted(p for c in down for p in c.partitions)
        elif not self.placement.single:
            down = [c for c in self.connections if not c.availability.up]
            section["partitions"] = self.partitions
            section["shards"] = len(self.connections)
            section["shards_down"] = [c.index for c in down]
            section["partitions_down"] = sorted(p for c in down for p in c.partitions)
        return {"redis": section}


async def _all(waits: list[Awaitable[None]]) -> None:
    await asyncio.gather(*waits)


def _shown(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//", url)  # no password in a sentence


def _live(connection: Connection) -> bool:
    """Whether ``connection`` was live once since it started (its ready event is set)."""
    return connection.ready is not None and connection.ready.is_set()
