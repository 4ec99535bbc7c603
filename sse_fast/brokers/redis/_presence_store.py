"""Presence across nodes, in Redis (``hub/_presence.py`` has the rules).

* ``sse:p:<topic>`` (partitioned: ``P{T}:p:<topic>`` on the topic's shard,
  ``_placement.py``): a hash per tracked topic, one field per worker (its
  member id) holding ``{"subscribers": n, "subjects": {...}, "at": unix
  time}``. A worker writes the topics whose figures changed once per
  ``presence_interval`` and all of its tracked topics every 10 s; a field of
  0 subscribers is deleted; the key expires 60 s after its last write.
* A reader takes every field whose ``at`` is within ``STALE`` seconds (a
  worker that died stops refreshing: its figures age out, and the reader
  deletes them) and adds them up. ``at`` is the writer's wall clock: the
  nodes' clocks must agree within seconds (NTP). A worker that stops
  gracefully deletes its fields.

Without Redis (one worker, or several on the relay) the hub's ``gather``
covers every worker and nothing is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from ._connection import Connection
    from ._member_options import MemberOptions
    from ._placement import Placement

__all__ = [
    "KEY_TTL",
    "STALE",
    "PresenceStore",
    "RedisPresence",
]

#: seconds a topic's presence hash lives after its last write
KEY_TTL = 60
#: figures older than this are a dead worker's (three of its 10 s refreshes,
#: ``hub/_presence.py``): readers leave them out
STALE = 30.0


class RedisPresence:
    """One worker's presence figures in one Redis: a hash per topic, one field per worker
    (``key``: the names of the hashes, when not ``<prefix>p:<topic>``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        member: str,
        key: Callable[[str], str] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.member = member
        self._key = key

    def key(self, topic: str) -> str:
        """The Redis key of ``topic``'s presence hash."""
        return f"{self.prefix}p:{topic}" if self._key is None else self._key(topic)

    async def store(self, figures: dict[str, dict[str, Any]]) -> None:
        """This worker's figures of these topics."""
        now = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            for topic, figure in figures.items():
                key = self.key(topic)
                if figure["subscribers"]:
                    pipe.hset(key, self.member, orjson.dumps({**figure, "at": now}))
                    pipe.expire(key, KEY_TTL)
                else:
                    pipe.hdel(key, self.member)
            await pipe.execute()

    async def read(self, topic: str) -> list[dict[str, Any]]:
        """Every live worker's figures of ``topic``."""
        key = self.key(topic)
        fields = await self.client.hgetall(key)
        now = time.time()
        out, stale = [], []
        for member, value in fields.items():
            figure = orjson.loads(value)
            if now - float(figure.get("at", 0)) <= STALE:
                out.append(figure)
            else:
                stale.append(member)
        if stale:  # dead workers' fields: gone, so that a busy topic's hash stays small
            await self.client.hdel(key, *stale)
        return out


class PresenceStore:
    """A member's presence figures, each topic's on the Redis that holds it."""

    def __init__(
        self, options: MemberOptions, placement: Placement, connections: Sequence[Connection]
    ) -> None:
        self.options = options
        self.placement = placement
        #: the member's connections (the feed's list: a Cluster's grows as masters are met)
        self.connections = connections

    def _on(self, connection: Connection) -> RedisPresence:
        """The figures kept on ``connection``'s Redis; ``RuntimeError`` while it is away."""
        if connection.client is None or not connection.availability.up:
            raise RuntimeError(f"{connection} is away")
        placement = self.placement
        key = None if placement.single else placement.presence
        return RedisPresence(connection.client, self.options.prefix, self.options.member_id, key)

    def _connection_of(self, topic: str) -> Connection:
        placement = self.placement
        return self.connections[placement.shard_of(placement.partition_of(topic))]

    async def store(self, figures: dict[str, dict[str, Any]]) -> None:
        """Write this worker's figures of these topics, each on its topic's Redis;
        ``RuntimeError`` naming the Redis that were away (the others' are written)."""
        if len(self.connections) == 1:
            await self._on(self.connections[0]).store(figures)
            return
        by_connection: dict[int, dict[str, dict[str, Any]]] = {}
        for topic, figure in figures.items():
            by_connection.setdefault(self._connection_of(topic).index, {})[topic] = figure
        away = []
        for index, mine in by_connection.items():
            connection = self.connections[index]
            if connection.client is None or not connection.availability.up:
                away.append(str(connection))
                continue
            await self._on(connection).store(mine)
        if away:
            raise RuntimeError(f"{', '.join(away)} away: presence not written there")

    async def read(self, topic: str) -> list[dict[str, Any]] | None:
        """Every live worker's figures of ``topic``, read from its Redis; ``RuntimeError``
        while that Redis is away."""
        return await self._on(self._connection_of(topic)).read(topic)
