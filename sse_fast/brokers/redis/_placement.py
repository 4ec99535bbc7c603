"""Where a partition lives and what its keys are called: the one owner of "which
Redis holds which partition" (``Placement``).

* One Redis with one partition (``single``) keeps the one-sequence names of the
  package docstring (``sse:position``, ``sse:c:<topic>``, ``sse:n:<node>``, ...)
  and scripts (``READ_SCRIPT``, ``ADVANCE_SCRIPT``), byte for byte.
* Otherwise (``N`` partitions on ``S`` shards, ``S`` = 1 included) partition
  ``p`` lives on shard ``p % S`` (``_partitions.shard_of``) under its tagged keys
  (``_partitions.partition_keys``: ``P{T}:position``, ``P{T}:c:<topic>``, ...),
  read and advanced by the partition scripts, every key declared.

A connection's probes go on a channel of its own Redis (``probe_channel``); the
node's gathers on ``node_channel`` (shard 0).

*An owner table.* Given ``owners`` (one shard index per partition), ``shard_of``
reads the table instead of ``p % S``: a Redis Cluster's slot map (the master
owning each partition's tag slot, ``_cluster.Topology``) is given this way, and
``reassign`` takes a whole new table when the map changes (re-homing), with more
Redis than before when a master is met for the first time (the broker's
``_rehoming.py``). Nothing else needs to know where a partition's index came from.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from ._partitions import PartitionKeys, cluster_tags, partition_keys, shard_of
from ._scripts import (
    ADVANCE_SCRIPT,
    CLOCK_SCRIPT,
    EXPAND_SCRIPT,
    PARTITION_ADVANCE_SCRIPT,
    PARTITION_READ_SCRIPT,
    READ_SCRIPT,
    births_key,
    born_channel,
    channel_prefix,
    directory_keys,
    gather_key,
    node_channel,
    partition_of,
    sequence_keys,
)

__all__ = [
    "Call",
    "Placement",
]

#: a script call: (the script's text, KEYS, ARGV)
Call = tuple[str, list[str], list[Any]]


class Placement:
    """``partitions`` partitions over ``shards`` Redis under ``prefix``: which shard holds a
    partition, and the names of its keys and channels. ``owners`` (one shard index per
    partition, e.g. a Cluster's slot map) replaces ``p % shards``."""

    def __init__(
        self, prefix: str, partitions: int, shards: int, owners: Sequence[int] | None = None
    ) -> None:
        self.prefix = prefix
        self.partitions = partitions
        self.shards = shards
        self._owners: list[int] | None = None
        if owners is not None:
            if len(owners) != partitions:
                raise ValueError(
                    f"owners gives {len(owners)} shard indexes for {partitions} partitions: "
                    "give one per partition, in partition order"
                )
            self._owners = []
            for partition, shard in enumerate(owners):
                self._check(partition, shard)
                self._owners.append(shard)
        #: one Redis, one sequence: today's keys and scripts
        self.single = partitions == 1 and shards == 1 and owners is None
        self._keys: list[PartitionKeys] = []
        if not self.single:
            self._keys = [partition_keys(prefix, tag) for tag in cluster_tags(partitions)]
        self._channel_prefix = channel_prefix(prefix)
        self._prefix = prefix.encode()

    # ---------------------------------------------------------------- where

    def partition_of(self, name: str) -> int:
        """The partition of topic ``name``."""
        return 0 if self.partitions == 1 else partition_of(name, self.partitions)

    def shard_of(self, partition: int) -> int:
        """The index (in the URL list, or the owner table) of the Redis that holds
        ``partition``."""
        if self._owners is not None:
            return self._owners[partition]
        return 0 if self.shards == 1 else shard_of(partition, self.shards)

    def reassign(self, owners: Sequence[int], shards: int) -> list[int]:
        """A new owner table over ``shards`` Redis (never fewer than before: indexes are
        not reused); the partitions whose index changed."""
        if self._owners is None:
            raise ValueError(
                f"partitions cannot move: this placement is p % {self.shards}; give Placement "
                "an owner table (owners=) to move partitions"
            )
        if len(owners) != self.partitions or shards < self.shards:
            raise ValueError(
                f"reassign({len(owners)} owners, {shards} shards): give one index per partition "
                f"({self.partitions}) over at least {self.shards} shards"
            )
        self.shards = shards
        for partition, shard in enumerate(owners):
            self._check(partition, shard)
        moved = [
            p for p, (old, new) in enumerate(zip(self._owners, owners, strict=True)) if old != new
        ]
        self._owners = list(owners)
        return moved

    def gather_key(self) -> str:
        """A fresh list for the answers to one gather, on the Redis of the node's channel."""
        if self.single:
            return gather_key(self.prefix)
        return f"{self._keys[0].tagged}g:{uuid.uuid4().hex}"

    def _check(self, partition: int, shard: int) -> None:
        if not 0 <= shard < self.shards:
            raise ValueError(
                f"partition {partition} placed on shard {shard}: give an index from 0 to "
                f"{self.shards - 1} ({self.shards} Redis)"
            )

    def partitions_on(self, shard: int) -> tuple[int, ...]:
        """The partitions shard ``shard`` holds, in order."""
        return tuple(p for p in range(self.partitions) if self.shard_of(p) == shard)

    def keys(self, partition: int) -> PartitionKeys:
        """Partition ``partition``'s key names (a partitioned layout only)."""
        return self._keys[partition]

    # ---------------------------------------------------------------- names

    def channel(self, name: str) -> bytes:
        """Topic ``name``'s pub/sub channel."""
        if self.single:
            return self._channel_prefix + name.encode()
        return self._keys[self.partition_of(name)].channel(name).encode()

    def topic_of(self, channel: bytes) -> str | None:
        """The topic whose channel is ``channel``; None for another channel (probes, gathers)."""
        if self.single:
            if channel.startswith(self._channel_prefix):
                return channel[len(self._channel_prefix) :].decode()
            return None
        start = len(self._prefix)
        end = channel.find(b"}:", start)
        if not channel.startswith(self._prefix) or end < 0 or channel[end + 2 : end + 4] != b"c:":
            return None
        return channel[end + 4 :].decode()

    def born_channel(self, partition: int) -> bytes:
        """Where the births of ``partition``'s topics are told (pattern streams)."""
        if self.single:
            return born_channel(self.prefix).encode()
        return self._keys[partition].born.encode()

    def births_key(self, partition: int) -> str:
        """``partition``'s topics by the position of their birth."""
        if self.single:
            return births_key(self.prefix)
        return self._keys[partition].directory[1]

    def presence(self, name: str) -> str:
        """Topic ``name``'s presence hash."""
        if self.single:
            return f"{self.prefix}p:{name}"
        return self._keys[self.partition_of(name)].presence(name)

    def node_channel(self, node: str) -> str:
        """The node's channel (gathers; probes too with one sequence), on shard 0."""
        if self.single:
            return node_channel(self.prefix, node)
        return self._keys[0].probe(node)

    def probe_channel(self, shard: int, member: str, node: str) -> str:
        """Where ``member``'s connection to shard ``shard`` sends its probes."""
        if self.single:
            return self.node_channel(node)
        return self._keys[self.partitions_on(shard)[0]].probe(member)

    # ---------------------------------------------------------------- script calls

    def read_call(self, partition: int, froms: dict[str, int | None], count: int) -> Call:
        """Read partition ``partition``'s sequence and these topics' streams (``froms``: after
        which position, None for the newest ``count``)."""
        epoch = os.urandom(8).hex()
        if self.single:
            args: list[Any] = [self.prefix, count, epoch]
            for name, start in froms.items():
                args += [name, "" if start is None else str(start)]
            return READ_SCRIPT, sequence_keys(self.prefix), args
        keys = self._keys[partition]
        declared = [*keys.sequence, *(keys.stream(name) for name in froms)]
        starts = ["" if start is None else str(start) for start in froms.values()]
        return PARTITION_READ_SCRIPT, declared, [count, epoch, *starts]

    def expand_call(self, partition: int, prefixes: Sequence[str]) -> Call:
        """The topics in ``partition``'s directory whose names start with each of
        ``prefixes``, with its floor and a position every later birth is above."""
        if self.single:
            keys = directory_keys(self.prefix)
        else:
            tagged = self._keys[partition]
            keys = [tagged.directory[0], tagged.floor, tagged.position]
        return EXPAND_SCRIPT, keys, list(prefixes)

    def clock_call(self, partition: int) -> Call:
        """A position of ``partition`` that every event published from now on is above."""
        if self.single:
            return CLOCK_SCRIPT, sequence_keys(self.prefix)[:1], []
        return CLOCK_SCRIPT, [self._keys[partition].position], []

    def advance_call(self, partition: int, above: int, epoch: str) -> Call:
        """Raise partition ``partition``'s floor above ``above`` if its epoch is ``epoch``."""
        if self.single:
            return ADVANCE_SCRIPT, sequence_keys(self.prefix), [self.prefix, above, epoch]
        return PARTITION_ADVANCE_SCRIPT, self._keys[partition].sequence, [above, epoch]
