"""A member's feed: its connections, one per Redis, and what they say together.

* The feed owns the member's ``Connection`` list: one per URL (a shard, or the
  one Redis), made here; on a Redis Cluster one per master, made from the slot
  map by its ``Rehoming`` (``_rehoming.py``), which adds a connection for each
  master met and moves partitions between them as the map changes.
* It starts them and waits until those carrying partitions are live (or says
  which are not), closes them, and reads them for the broker: ``available``
  while one carrying partitions is up, ``partitions_down``, ``unavailable_for``,
  what was read of each partition (``state``), the topics held (``prepare``,
  ``release``, on the connection of each topic's Redis), and the births handled
  (``complete_up_to``) and the directory (``expand``) for pattern streams.
* It holds no broker: what its connections need comes to it at construction
  (``_member_options.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from ..._tasks import stop_task
from .. import Expansion, Membership
from ._cluster import Topology
from ._connection import Connection
from ._member_options import MemberOptions
from ._new_topics import read_directory
from ._placement import Placement
from ._rehoming import Rehoming
from ._state import PartitionRead

__all__ = ["Feed"]

log = logging.getLogger("sse_fast.redis")

#: what a member has read before it connected (never changed: ``state`` hands it out read-only)
_NOTHING_READ = PartitionRead()


class Feed:
    """A member's connections to its Redis (a Cluster's masters: following its slot map)."""

    def __init__(self, options: MemberOptions, placement: Placement, membership: Membership):
        self.options = options
        self.placement = placement
        self.membership = membership
        #: one per Redis (in the URLs' order; a Cluster's masters in the order met): the
        #: one owner of what is held and read there
        self.connections: list[Connection] = []
        #: a Cluster's slot map, and the connections following it (made at ``start``)
        self.rehoming: Rehoming | None = None
        if options.cluster:
            topology = Topology(options.url, options.partitions)
            self.rehoming = Rehoming(topology, placement, membership, self.connections, self._new)
        else:
            self.connections.extend(self._new(i, url) for i, url in enumerate(options.urls))

    def _new(
        self, index: int, url: str, client: Callable[[], aioredis.Redis] | None = None
    ) -> Connection:
        rehoming = self.rehoming
        return Connection(
            self.options,
            self.placement,
            self.membership,
            index,
            url,
            client=client,
            refresh=None if rehoming is None else rehoming.refresh,
            suspect=self.suspect,
        )

    @property
    def first(self) -> Connection:
        """The first connection (the one Redis's, with one sequence)."""
        return self.connections[0]

    def state(self, partition: int) -> PartitionRead:
        """What this member read of ``partition`` (owned by the connection that carries it;
        nothing yet before a Cluster's connections are made at ``start``)."""
        if not self.connections:
            return _NOTHING_READ
        return self.connections[self.placement.shard_of(partition)].states[partition]

    def connection_of(self, name: str) -> Connection:
        """The connection to the Redis that holds topic ``name``."""
        placement = self.placement
        return self.connections[placement.shard_of(placement.partition_of(name))]

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
                    f"cannot use the Redis Cluster at {_shown(self.options.url)}: {exc}"
                ) from None
        for connection in self.connections:
            connection.start()
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
                f"cannot reach Redis at {' '.join(map(_shown, self.options.urls))} (is "
                "redis-server running? check --redis-url)"
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
        self.membership.leave()
        if self.rehoming is not None:
            await stop_task(self.rehoming.close())
            await self.rehoming.topology.close()
        for connection in self.connections:
            await connection.close()

    def suspect(self) -> None:
        """A command met a sign that a Cluster's slot map moved (``MOVED``, no answer): read it
        again in the background (nothing without a Cluster)."""
        if self.rehoming is not None:
            self.rehoming.suspect()

    # ---------------------------------------------------------------- availability

    @property
    def carrying(self) -> list[Connection]:
        """The connections that carry partitions (on a Cluster, a master that left the map
        carries none)."""
        return [c for c in self.connections if c.partitions]

    @property
    def available(self) -> bool:
        """Whether a subscription is live and its Redis answered the last command."""
        return any(connection.availability.up for connection in self.carrying)

    @property
    def partitions_down(self) -> int:
        """How many partitions are on a Redis (a shard, a Cluster master) that is down now."""
        return sum(len(c.partitions) for c in self.carrying if not c.availability.up)

    @property
    def unavailable_for(self) -> float:
        """Seconds since every Redis became unavailable (0 while one is available)."""
        downs = [connection.availability.down_for() for connection in self.carrying]
        if not downs:
            return 0.0
        return 0.0 if 0.0 in downs else min(downs)

    # ---------------------------------------------------------------- topics

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

    def release(self, name: str) -> None:
        """Unsubscribe from topic ``name`` (``HeldTopics.release``)."""
        self.connection_of(name).topics.release(name)

    def complete_up_to(self) -> int:
        """In every partition, every topic born at or below this position that this member's
        pattern streams want was delivered (``NewTopics.done``): 0 while a partition is
        carried by no connection (a Cluster's slot without a master)."""
        carrying = self.carrying
        if sum(len(c.partitions) for c in carrying) < self.options.partitions:
            return 0
        dones = [c.new_topics.done() for c in carrying]
        return min((d for d in dones if d is not None), default=0)

    def expand(self, patterns: Sequence[str]) -> Awaitable[Expansion]:
        """The topics in Redis's directory whose names start with the literal prefixes of
        ``patterns`` (``_new_topics.read_directory``); ``PublishError`` 503 while Redis is
        away."""
        return read_directory(self.carrying, self.placement, self.options.history_age, patterns)


async def _all(waits: list[Awaitable[None]]) -> None:
    await asyncio.gather(*waits)


def _shown(url: str) -> str:
    """``url`` without its password (for a sentence)."""
    return re.sub(r"//[^@/]*@", "//", url)


def _live(connection: Connection) -> bool:
    """Whether ``connection`` was live once since it started (its ready event is set)."""
    return connection.ready is not None and connection.ready.is_set()
