"""A Redis Cluster's topology as the broker uses it: which master owns each
partition's slot, and one plain client per master.

Theory of operation
-------------------
*Why not ``redis.asyncio.RedisCluster``.* Its pub/sub polls its nodes in turn
and re-homes channels in a task of its own; its pipelines refuse ``evalsha``;
``WAIT`` has no key, so it would go to a node that did not take the write and
confirm it falsely (design measurements, ``docs/operations/redis.md``). The
broker needs to know, for each partition, the one connection its script, its
``WAIT`` and its ``SSUBSCRIBE`` go to. So this module keeps the slot map itself
(``CLUSTER SLOTS``, asked of any master or seed that answers) and a plain client
per master, failing fast (no retries inside redis-py: a dead master is an error
at once, and the broker answers 503 for that partition's topics only).

*Refresh.* The map is read at start and again whenever the broker meets a sign
that it moved: a connection error to a master, ``MOVED`` or ``ASK``, a
``sunsubscribe`` pushed for a slot the node lost, a probe overdue. ``refresh``
says which partitions changed master; clients of masters that left the map are
closed.

*Connection indexes.* The broker keeps one connection per master, numbered in the
order the masters were first met; ``owner_table`` turns the map into each
partition's connection index (``_placement.Placement``'s ``owners``), adding a
master never met before at the next index. Indexes are never reused, so a
refresh leaves every partition that did not move on the connection it was on.

*URLs.* ``redis-cluster://[user:password@]host:port[,host:port...]`` names seed
nodes (the rest is discovered); ``rediss-cluster://`` is the same over TLS. A
Cluster has one database (no ``/db``) and no Unix sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ...settings._cluster_url import CLUSTER_SCHEMES, Address, ClusterURL, parse_cluster_url
from ._partitions import SLOTS, cluster_tags, key_slot
from ._scripts import COMMAND_TIMEOUT, MAX_CONNECTIONS

__all__ = [
    "FULL_COVERAGE_WARNING",
    "SCHEMES",
    "UNCHECKED_COVERAGE_WARNING",
    "Address",
    "ClusterURL",
    "Topology",
    "connect_node",
    "parse_cluster_url",
    "version_refusal",
]

#: the URL schemes of a Redis Cluster (plain, TLS)
SCHEMES = CLUSTER_SCHEMES


#: said at start when ``cluster-require-full-coverage`` is yes (``uncovered_stops_all``)
FULL_COVERAGE_WARNING = (
    "the Redis Cluster has cluster-require-full-coverage yes: while any master is down "
    "with no replica to take over, every master refuses every command, and every topic "
    "answers 503, not only that master's; set cluster-require-full-coverage no "
    "(CONFIG SET on each node, or in redis.conf) so the other masters' topics go on"
)

#: said at start when ``CONFIG GET cluster-require-full-coverage`` is refused (managed offerings)
UNCHECKED_COVERAGE_WARNING = (
    "the Redis Cluster refused CONFIG GET cluster-require-full-coverage (a managed offering?): "
    "whether losing one master and its replicas stops every topic, not only that master's, "
    "could not be checked; ask the provider, or see docs/operations/redis.md#redis-cluster"
)

#: the oldest Redis a Cluster master may run (SPUBLISH and SSUBSCRIBE came in 7.0)
OLDEST = (7, 0)


class Topology:
    """The masters of a Redis Cluster and the partition each owns (``partitions`` partitions,
    each in its hash tag's slot), with one fail-fast client per master."""

    def __init__(self, url: str | ClusterURL, partitions: int) -> None:
        self.url = parse_cluster_url(url) if isinstance(url, str) else url
        self.partitions = partitions
        #: each partition's slot (its hash tag's)
        self.slots = [key_slot("{" + tag + "}") for tag in cluster_tags(partitions)]
        #: the master owning each slot, once read (``refresh``)
        self._owner: list[Address | None] = [None] * SLOTS
        self._clients: dict[Address, aioredis.Redis] = {}
        self._closed = False

    # ---------------------------------------------------------------- clients

    def client(self, address: Address) -> aioredis.Redis:
        """The plain client of master ``address`` (made once, fail-fast); ``ConnectionError``
        once closed."""
        if self._closed:
            raise ConnectionError("the Redis Cluster's topology was closed")
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = connect_node(address, self.url)
        return client

    async def close(self) -> None:
        """Close every client (no new one is made afterwards)."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    # ---------------------------------------------------------------- the map

    @property
    def masters(self) -> list[Address]:
        """The masters owning at least one partition, in address order."""
        return sorted({a for a in (self._owner[s] for s in self.slots) if a is not None})

    def master_of(self, partition: int) -> Address | None:
        """The master owning ``partition``'s slot (None before a refresh found one)."""
        return self._owner[self.slots[partition]]

    def master_of_key(self, key: str) -> Address | None:
        """The master owning ``key``'s slot (None before a refresh found one)."""
        return self._owner[key_slot(key)]

    def partitions_of(self, address: Address) -> list[int]:
        """The partitions master ``address`` owns."""
        return [p for p, slot in enumerate(self.slots) if self._owner[slot] == address]

    def owner_table(
        self, indexes: dict[Address, int], previous: Sequence[int] | None = None
    ) -> list[int]:
        """Each partition's master as its index in ``indexes`` (a master met for the first time
        is added there at the next index). A partition whose slot has no master keeps its
        index in ``previous``; with no ``previous`` (at start), ``ConnectionError`` saying
        which slot is uncovered and what to do."""
        table = []
        for partition, slot in enumerate(self.slots):
            address = self._owner[slot]
            if address is None:
                if previous is None:
                    raise ConnectionError(
                        f"the Redis Cluster's slot {slot} (partition {partition}'s) has no "
                        "master: every slot must be served; check the Cluster with "
                        "redis-cli --cluster check host:port and fix it (--cluster fix)"
                    )
                table.append(previous[partition])
                continue
            if address not in indexes:
                indexes[address] = len(indexes)
            table.append(indexes[address])
        return table

    async def refresh(self, timeout: float = COMMAND_TIMEOUT) -> list[int]:
        """Read the slot map from the first node that answers (known masters, then the seeds);
        the partitions whose master changed. ``ConnectionError`` naming the nodes tried when
        none answered."""
        tried: list[str] = []
        for address in dict.fromkeys([*self.masters, *self.url.seeds]):
            try:
                async with asyncio.timeout(timeout):
                    reply = await self.client(address).execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER SLOTS"
                    )
            except Exception as exc:  # down, refused, not a cluster node, still starting
                tried.append(f"{address[0]}:{address[1]} ({type(exc).__name__}: {exc})")
                continue
            return await self._apply(_slot_map(reply))
        raise ConnectionError(
            "no node of the Redis Cluster answered CLUSTER SLOTS: " + "; ".join(tried)
        )

    async def _apply(self, owner: list[Address | None]) -> list[int]:
        moved = [p for p, slot in enumerate(self.slots) if owner[slot] != self._owner[slot]]
        self._owner = owner
        keep = set(self.masters) | set(self.url.seeds)
        for address in [a for a in self._clients if a not in keep]:
            with contextlib.suppress(Exception):
                await self._clients.pop(address).aclose()
        return moved

    # ---------------------------------------------------------------- about the nodes

    async def versions(self) -> dict[Address, str]:
        """Each master's Redis version (``INFO server``), of the masters that answer (one
        down at start is a fault, said by the workers, not a version to refuse)."""
        out = {}
        for address in self.masters:
            try:
                info = await self.client(address).info("server")
            except (RedisError, OSError):
                continue
            out[address] = str(info.get("redis_version", "?"))
        return out

    async def uncovered_stops_all(self) -> bool | None:
        """Whether a lost slot stops every slot (``cluster-require-full-coverage yes``, the
        default); None when ``CONFIG`` is refused (managed offerings)."""
        try:
            config = await self.client(self.masters[0]).config_get("cluster-require-full-coverage")
        except Exception:
            return None
        return str(config.get("cluster-require-full-coverage", "yes")) == "yes"


def version_refusal(versions: dict[Address, str]) -> str | None:
    """A sentence refusing the start when a master (``Topology.versions``) runs a Redis older
    than 7.0 or does not say which; None when every master is new enough."""
    old = []
    for (host, port), version in sorted(versions.items()):
        try:
            major_minor = tuple(int(part) for part in version.split(".")[:2])
        except ValueError:
            major_minor = ()
        if len(major_minor) < 2 or major_minor < OLDEST:
            old.append(f"{host}:{port} runs {version!r}")
    if not old:
        return None
    return (
        "the Redis Cluster's masters must run Redis 7.0 or newer (sharded pub/sub: "
        f"SPUBLISH, SSUBSCRIBE), but {', '.join(old)}: upgrade them, or give one Redis or "
        "independent Redis as shards (--redis-url once per shard)"
    )


def _slot_map(reply: Sequence[Any]) -> list[Address | None]:
    """``CLUSTER SLOTS``' reply as the master of each slot."""
    owner: list[Address | None] = [None] * SLOTS
    for start, end, master, *_ in reply:
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        address = (host, int(master[1]))
        for slot in range(int(start), int(end) + 1):
            owner[slot] = address
    return owner


def connect_node(address: Address, url: ClusterURL) -> aioredis.Redis:
    """A plain client of one node: fail fast (no retries inside redis-py), a bounded pool."""
    tls: dict[str, Any] = dict(url.tls_options)
    pool = aioredis.BlockingConnectionPool(
        connection_class=aioredis.SSLConnection if url.tls else aioredis.Connection,
        **tls,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT,
        host=address[0],
        port=address[1],
        username=url.username,
        password=url.password,
        socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=COMMAND_TIMEOUT,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)
