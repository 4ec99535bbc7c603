"""A member on a Redis Cluster: one connection per master, and partitions that
follow the slot map (``Rehoming``).

Theory of operation
-------------------
*Where a partition lives.* Each partition is one slot (its hash tag's,
``_partitions.cluster_tags``); the master owning that slot holds it. The
Cluster's map is read by ``_cluster.Topology`` (``CLUSTER SLOTS`` from any node
that answers); this module turns it into the broker's ``Placement`` (an owner
table: each partition's connection index) and its connections: one
``Connection`` per master, numbered in the order the masters were first met,
never renumbered, so a partition that did not move stays where it was.

*When the map is read again.* At start; then whenever a connection lost its
subscription (a master gone, a ``sunsubscribe`` pushed for a slot that moved,
a probe overdue: ``Connection.run`` asks before each new attempt), and when a
publish met ``MOVED``, ``ASK``, ``READONLY`` or no answer (``suspect``, which
reads it in the background). One read at a time; a read asked while one runs
waits for it.

*What moves.* For each partition whose master changed, its ``PartitionRead`` (what
this member read of its sequence) and its held topics go from the old
master's connection to the new one's (``Connection.surrender``, ``adopt``),
opened if that master is new; the connections that changed subscribe and
resync again: the moved partitions are read since what this member holds,
with the epoch and position checks of a reconnect (``History.resync``: a
replica that lagged is said as ``redis-lost-writes`` on that partition's
streams only). A partition whose slot has no master for now stays where it
was, unavailable (503 for its topics) until the map names one. Partitions on
other masters are not touched.

*A stale map.* Right after a failover a node may still name the dead master;
the connection to it fails again, and the next attempt reads the map again
(within a second, ``Connection.run``'s backoff), until the new master is named.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._cluster import Address, Topology, connect_node

if TYPE_CHECKING:
    from .. import Membership
    from ._connection import Connection
    from ._placement import Placement

__all__ = ["Rehoming"]

log = logging.getLogger("sse_fast.redis")


class Rehoming:
    """A member's connections to a Redis Cluster's masters, following its slot map."""

    def __init__(
        self,
        topology: Topology,
        placement: Placement,
        membership: Membership,
        connections: list[Connection],
        new: Callable[..., Connection],
    ) -> None:
        self.topology = topology
        #: the member's placement, moved here (``reassign``) as the map moves
        self.placement = placement
        self.membership = membership
        #: the feed's connections: one is added here for each master met
        self.connections = connections
        #: makes a master's connection: ``new(index, "host:port", client=...)``
        self._new = new
        #: each master met so far -> its connection's index (never reused)
        self.indexes: dict[Address, int] = {}
        #: slot map reads that moved partitions
        self.moves = 0
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the slot map and make one connection per master (not started);
        ``ConnectionError`` when no node answers, or a partition's slot has no master."""
        await self.topology.refresh()
        table = self.topology.owner_table(self.indexes)
        self.placement.reassign(table, len(self.indexes))
        self.connections[:] = [self._connection(a) for a in self._by_index()]

    def _by_index(self) -> list[Address]:
        return sorted(self.indexes, key=self.indexes.__getitem__)

    def _connection(self, address: Address) -> Connection:
        url = self.topology.url
        return self._new(
            self.indexes[address],
            f"{address[0]}:{address[1]}",
            client=lambda: connect_node(address, url),
        )

    # ---------------------------------------------------------------- reading the map

    def suspect(self) -> None:
        """A command met a sign that the map moved: read it in the background (once at a
        time)."""
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(self.refresh())
            self._background.add_done_callback(_said)

    async def refresh(self) -> None:
        """Read the slot map again and move the partitions whose master changed; a map that
        cannot be read now is tried again at the next sign."""
        if self.membership.closing:
            return
        async with self._lock:
            try:
                await self.topology.refresh()
            except Exception as exc:  # no node answers (a ConnectionError naming them), ...
                log.debug("the Redis Cluster's slot map could not be read: %r", exc)
                return
            self._apply()  # against the placement: a map read but not applied is applied now

    def _apply(self) -> None:
        if self.membership.closing:  # a read that was under way when the broker closed
            return
        placement = self.placement
        before = [placement.shard_of(p) for p in range(placement.partitions)]
        table = self.topology.owner_table(self.indexes, previous=before)
        connections = self.connections
        for address in self._by_index()[len(connections) :]:  # masters met for the first time
            connections.append(self._connection(address))
        moved = placement.reassign(table, len(connections))
        if not moved:
            return
        self.moves += 1
        for partition in moved:
            known, topics, born = connections[before[partition]].surrender(partition)
            connections[table[partition]].adopt(partition, known, topics, born)
        log.warning(
            "the Redis Cluster's slot map moved partitions %s: %s",
            _ranges(moved),
            "; ".join(
                f"{c} now holds {len(c.partitions)}"
                for c in connections
                if c.index in {table[p] for p in moved}
            ),
        )
        for connection in connections:
            if connection.partitions and (connection.task is None or connection.task.done()):
                connection.start()  # new, or stopped once it held nothing

    def close(self) -> asyncio.Task[None] | None:
        """The background read, to be stopped with the broker."""
        return self._background


def _said(task: asyncio.Task[None]) -> None:
    """A background read that failed (a bug: a map that cannot be read is not an error)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("following the Redis Cluster's slot map failed: %r", task.exception())


def _ranges(partitions: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``."""
    out: list[str] = []
    start = prev = partitions[0]
    for p in [*partitions[1:], None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    return ", ".join(out)
