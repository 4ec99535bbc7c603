"""History reads of one Redis's partitions, and what they mean to the member.

``History`` (one per ``Connection``) reads the topics' streams (``READ_SCRIPT``
with one sequence, ``PARTITION_READ_SCRIPT`` per partition otherwise: a call
reads topics of one partition only) and applies what they say:

* a new topic's floor (never below its partition's dataset floor) and history
  (``load``, chunked so that Redis is not blocked long);
* a repaired topic's gap (``apply``: ``redis-history-trimmed`` where the stream
  was trimmed past what the member holds);
* at each (re)subscription, per partition of that Redis, the resync
  (``resync``): the epoch changed (the Redis lost its data) or its position is
  behind what the member saw (a failover to a replica that lagged): the
  partition's floor is raised above what the member holds or saw
  (``advance``), the member is told once, for that partition
  (``Member.rejoined``: only the streams of its topics get ``sse-fast-missed``),
  and then what the Redis has after the floor is delivered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...protocol import Reason
from ._state import LOAD_CHUNK, PartitionRead, Read, Reconnect, parse_read

if TYPE_CHECKING:
    from .. import Membership
    from ._connection import Connection
    from ._member_options import MemberOptions
    from ._placement import Placement

__all__ = [
    "History",
]

log = logging.getLogger("sse_fast.redis")


class History:
    """Reads of the streams of one Redis's partitions, and what they mean to the member."""

    def __init__(
        self,
        options: MemberOptions,
        placement: Placement,
        membership: Membership,
        connection: Connection,
    ) -> None:
        self.options = options
        self.placement = placement
        self.membership = membership
        self.connection = connection

    async def read(self, partition: int, froms: dict[str, int | None]) -> Read:
        """Partition ``partition``'s sequence, and per topic (all of that partition): the max
        deleted position, the stream length, and its entries after ``froms[topic]`` (or the
        newest ``load_frames``), oldest first."""
        text, keys, args = self.placement.read_call(partition, froms, self.options.load_frames)
        reply = await self.connection.script(text)(keys=keys, args=args)
        return parse_read(reply, list(froms))

    async def reads(self, calls: list[tuple[int, dict[str, int | None]]]) -> list[Read]:
        """``read`` of each (partition, froms), in one round trip."""
        if len(calls) == 1:
            return [await self.read(*calls[0])]
        connection = self.connection
        assert connection.client is not None
        async with connection.client.pipeline(transaction=False) as pipe:
            for partition, froms in calls:
                text, keys, args = self.placement.read_call(
                    partition, froms, self.options.load_frames
                )
                await connection.script(text)(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        return [parse_read(r, list(froms)) for r, (_, froms) in zip(replies, calls, strict=True)]

    async def load(self, names: list[str]) -> None:
        """Read new topics ``names`` (subscribed already) and give the member their floors and
        history; ``ConnectionError`` if the Redis lost its data meanwhile (the resync that
        tells the streams comes first)."""
        connection = self.connection
        for partition, chunk in self.chunks(names):
            read = await self.read_new(partition, chunk)
            for name in chunk:
                self.apply(name, None, read)
                connection.topics.loaded(name)

    def chunks(self, names: list[str]) -> list[tuple[int, list[str]]]:
        """``names`` by partition, at most ``LOAD_CHUNK`` a read (Redis is not blocked long)."""
        of = self.placement.partition_of
        by_partition: dict[int, list[str]] = {}
        for name in names:
            by_partition.setdefault(of(name), []).append(name)
        return [
            (partition, mine[start : start + LOAD_CHUNK])
            for partition, mine in by_partition.items()
            for start in range(0, len(mine), LOAD_CHUNK)
        ]

    async def read_new(self, partition: int, names: list[str]) -> Read:
        """Read topics ``names`` of ``partition``, new to the member (at most ``LOAD_CHUNK``),
        whole; ``ConnectionError`` if the partition moved or its Redis lost its data
        meanwhile (the resync that tells the streams comes first)."""
        connection = self.connection
        read = await self.read(partition, dict.fromkeys(names))
        known = connection.states.get(partition)
        if known is None:
            raise ConnectionError(
                f"partition {partition} moved to another Redis Cluster master; try again"
            )
        if read.epoch != known.epoch:
            # Redis lost its data and the subscription did not notice (a FLUSHALL)
            connection.epoch_changed = True
            raise ConnectionError("Redis lost its data: the node repairs first")
        known.read_up_to(read.position)
        return read

    async def resync(self) -> None:
        """After (re)subscribing: per partition of this Redis, check the epoch and the position,
        and repair every held topic from its stream (after telling the streams what was lost)."""
        connection = self.connection
        placement = self.placement
        member = self.membership.member
        held: dict[int, list[str]] = {p: [] for p in connection.partitions}
        for name in sorted(connection.topics.held):
            mine = held.get(placement.partition_of(name))
            if mine is not None:  # else still loading here when its partition moved
                mine.append(name)
        calls = [
            (p, {name: member.newest_position(name) for name in names}) for p, names in held.items()
        ]
        reads = await self.reads(calls)
        lost: dict[str, list[int]] = {}
        for (partition, froms), read in zip(calls, reads, strict=True):
            known = connection.states.get(partition)
            if known is None:  # moved to another Cluster master meanwhile: resynced there
                continue
            reason = await self._check(partition, read, known)
            if reason is not None:
                lost.setdefault(reason, []).append(partition)
            for name in froms:
                after = froms[name] if reason is None else known.first_position - 1
                self.apply(name, after, read)
            known.resynced(read)
        self._tell(lost)
        connection.availability.answered()

    async def _check(self, partition: int, read: Read, known: PartitionRead) -> str | None:
        """Whether ``partition`` (read ``known`` so far) lost events (its reason); if so its
        floor is raised and the member told."""
        member = self.membership.member
        lost = None
        if known.epoch is not None and read.epoch != known.epoch:
            lost = Reason.REDIS_RESTARTED
        elif read.position < known.seen and not self.options.wait_replicas:
            lost = Reason.REDIS_LOST_WRITES  # a failover to a replica that lagged
        if lost is None:
            if known.epoch is not None:
                known.repaired()
            return None
        # Nothing after the newest position we hold or saw can be vouched for: the
        # partition's floor goes above it (ids we gave out never resolve to new events
        # there, on any node), the streams are told at the floor, and what Redis has
        # after it (published since it came back) follows.
        above = max(member.last_position_of(partition), known.seen)
        if lost == Reason.REDIS_LOST_WRITES:
            self._behind(partition, read.position, known.seen)
        text, keys, args = self.placement.advance_call(partition, above, read.epoch)
        floor = await self.connection.script(text)(keys=keys, args=args)
        if floor is None:
            raise Reconnect("Redis lost its data again during the repair")
        known.broke(int(floor))
        member.rejoined(known.first_position, lost, partition)
        return lost

    def _behind(self, partition: int, position: int, seen: int) -> None:
        where = "" if self.placement.single else f" partition {partition}"
        log.warning(
            "%s%s is behind events this node saw (position %d < %d: a failover to a "
            "replica that lagged; see --redis-wait-replicas): open streams are told",
            self.connection,
            where,
            position,
            seen,
        )

    def _tell(self, lost: dict[str, list[int]]) -> None:
        restarted = lost.get(Reason.REDIS_RESTARTED)
        if not restarted:
            return
        if self.placement.single:
            log.warning("Redis lost its data (epoch changed): open streams are told")
            return
        log.warning(
            "%s lost its data (epoch changed) in partitions %s: their open streams are told",
            self.connection,
            ", ".join(map(str, restarted)),
        )

    def floor_of(self, name: str, read: Read) -> int:
        """A topic new to the member: the position its claims start after (the history
        age, the dataset's floor, and what its stream no longer has)."""
        deleted, length, items = read.topics[name]
        horizon = read.now - int(self.options.history_age * 1_000_000)
        floor = max(deleted, horizon, read.floor)
        if items and length > len(items):
            floor = max(floor, items[0].position - 1)
        return floor

    def apply(self, name: str, since: int | None, read: Read) -> None:
        """Give the member topic ``name``'s history in ``read``, what is after
        ``since`` (None: the topic is new to the member, and the read gives its
        floor too)."""
        deleted, _length, items = read.topics[name]
        if since is None:  # a topic new to this member: its floor, then its history
            self.membership.member.load(name, self.floor_of(name, read), items)
            return
        # repairing: were events after ``since`` trimmed before we could read them?
        lost = deleted if deleted > since else 0
        if items and len(items) == self.options.load_frames and items[0].position - 1 > since:
            lost = max(lost, items[0].position - 1)
        if lost:
            self.membership.member.missed([name], lost, Reason.REDIS_HISTORY_TRIMMED)
        items = [item for item in items if item.position > since]
        if items:
            self.membership.deliver(items)
