"""What is in Redis and how it gets there: the key layout, the Lua scripts that
sequence, read and advance, and a client that fails fast (``publish`` straight into
Redis is ``_direct.py``; the package docstring has the keys and the promises).

The scripts live in ``*.lua`` files beside this module (package data). Each
opens with a header comment up to its first blank line; the script is the rest,
its leading newline included, so that ``PUBLISH_SCRIPT`` is the text (and the
SHA1 for ``EVALSHA``) that publishers in other languages already use.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from ..._core import EncodeError, encode
from ...publishing import PublishError, PublishRequest
from .._sequencing import RETRY_WINDOW
from ._partitions import PartitionKeys
from ._partitions import partition_of as _partition_of

__all__ = [
    "ADVANCE_SCRIPT",
    "CLOCK_SCRIPT",
    "COMMAND_TIMEOUT",
    "EXPAND_SCRIPT",
    "MAX_CONNECTIONS",
    "PARTITION_ADVANCE_SCRIPT",
    "PARTITION_PUBLISH_SCRIPT",
    "PARTITION_READ_SCRIPT",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "births_key",
    "born_channel",
    "channel_prefix",
    "close_client",
    "connect",
    "directory_keys",
    "frame_without_id",
    "gather_key",
    "node_channel",
    "partition_publish_args",
    "publish_args",
    "sequence_keys",
    "spanning_ids",
    "split_by_partition",
]

#: ``_partitions.partition_of``, remembered: FNV-1a in Python costs microseconds a topic
partition_of = lru_cache(maxsize=1 << 16)(_partition_of)

#: seconds a Redis command (or connecting) may take before it fails
COMMAND_TIMEOUT = 2.0  # seconds: a publish fails fast instead of waiting on a dead Redis
#: connections of a member's pool; a burst of commands waits for one, up to ``COMMAND_TIMEOUT``
MAX_CONNECTIONS = 64  # per member (worker): commands in flight at once


# ---------------------------------------------------------------- keys


def sequence_keys(prefix: str) -> list[str]:
    """The scripts' KEYS: the newest position handed out, and the dataset's epoch."""
    return [prefix + "position", prefix + "epoch"]


def channel_prefix(prefix: str) -> bytes:
    """What the pub/sub channel of every topic starts with (then the topic)."""
    return (prefix + "c:").encode()


def node_channel(prefix: str, node: str) -> str:
    """A node's own channel: probes, and gathering figures from its workers."""
    return f"{prefix}n:{node}"


def born_channel(prefix: str) -> str:
    """Where a topic's birth (its first event since its stream was created) is told,
    ``<position> <topic>``, before the event itself (pattern streams)."""
    return f"{prefix}born"


def directory_keys(prefix: str) -> list[str]:
    """``EXPAND_SCRIPT``'s KEYS: the topics' names (a sorted set read by prefix), the
    dataset's floor and the position."""
    return [prefix + "names", prefix + "floor", prefix + "position"]


def births_key(prefix: str) -> str:
    """The topics by the position of their birth (a sorted set; pattern streams read the
    births they may have missed from it)."""
    return prefix + "births"


def gather_key(prefix: str) -> str:
    """A fresh list for the answers to one gather."""
    return f"{prefix}g:{uuid.uuid4().hex}"


# ---------------------------------------------------------------- scripts


def _lua(name: str) -> str:
    """The script in file ``name``: what follows its header comment."""
    text = (resources.files(__name__.rpartition(".")[0]) / name).read_text(encoding="utf-8")
    header, blank, script = text.partition("\n\n")
    if not blank or not all(line.startswith("--") for line in header.splitlines()):
        raise RuntimeError(f"{name}: a script opens with '--' comment lines, then a blank line")
    return "\n" + script


#: sequence, store and publish a batch of events (``publish.lua`` says the arguments)
PUBLISH_SCRIPT = _lua("publish.lua").replace("RETRY_WINDOW", str(int(RETRY_WINDOW)))
#: the sequence and the history of some topics in one read (``read.lua``)
READ_SCRIPT = _lua("read.lua")
#: raise the dataset's floor and sequence above what a node holds, after Redis lost
#: events it holds (``advance.lua``)
ADVANCE_SCRIPT = _lua("advance.lua")
#: the topics whose names start with some prefixes, with Redis time and the dataset's floor
#: (``expand.lua``)
EXPAND_SCRIPT = _lua("expand.lua")
#: a position every event published from now on is above (``clock.lua``)
CLOCK_SCRIPT = _lua("clock.lua")
#: ``PUBLISH_SCRIPT`` for one partition, every key declared (``publish_partition.lua``)
PARTITION_PUBLISH_SCRIPT = _lua("publish_partition.lua").replace(
    "RETRY_WINDOW", str(int(RETRY_WINDOW))
)
#: ``READ_SCRIPT`` for one partition, every key declared (``read_partition.lua``)
PARTITION_READ_SCRIPT = _lua("read_partition.lua")
#: ``ADVANCE_SCRIPT`` for one partition, every key declared (``advance_partition.lua``)
PARTITION_ADVANCE_SCRIPT = _lua("advance_partition.lua")


# ---------------------------------------------------------------- client


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``, or
    ``redis-sentinel://host:port[,host:port]/master``) that fails fast. With Sentinel,
    ``await client.aclose()`` closes the master's connections only: also close the
    sentinels' (``await client.connection_pool.sentinel_manager.aclose()``). A Redis
    Cluster takes a ``redis.asyncio.RedisCluster`` instead."""
    options: dict[str, Any] = {
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": COMMAND_TIMEOUT,
        "retry_on_timeout": False,
    }
    if url.startswith("redis-sentinel://"):
        from redis.asyncio.sentinel import Sentinel

        rest = url[len("redis-sentinel://") :]
        hosts, _, master = rest.partition("/")
        if not master:
            raise ValueError(f"{url!r}: name the master, e.g. redis-sentinel://host:26379/mymaster")
        nodes = []
        for host in hosts.split(","):
            name, _, port = host.rpartition(":")
            nodes.append((name or host, int(port or 26379)))
        sentinel = Sentinel(nodes, **options)  # type: ignore[no-untyped-call]
        client: aioredis.Redis = sentinel.master_for(master, **options)
        return client
    # a burst of commands waits for a connection (up to the timeout) instead of failing
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=COMMAND_TIMEOUT, **options
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


async def close_client(client: aioredis.Redis) -> None:
    """Close a client ``connect`` made; with Sentinel, its connections to the sentinels too
    (closing the client closes its master's pool only: they would be left open)."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    try:
        await client.aclose()
    finally:
        if manager is not None:
            await manager.aclose()


# ---------------------------------------------------------------- publishing


def frame_without_id(request: PublishRequest) -> bytes:
    """The SSE frame of ``request`` without its ``id:`` line (the script adds it);
    ``PublishError`` (400, the encoder's reason) when it cannot be encoded."""
    try:
        return encode(request.data, event=request.event, retry=request.retry)
    except EncodeError as exc:
        raise PublishError(str(exc)) from None


def publish_args(
    prefix: str,
    requests: Sequence[PublishRequest],
    history_frames: int,
    history_age: float,
) -> list[Any]:
    """The arguments of ``PUBLISH_SCRIPT``; raises ``PublishError`` (400) before
    anything is sent if an event cannot be encoded."""
    wall = str(int(time.time() * 1000))
    events = [event_args(request, wall) for request in requests]
    return batch_args(prefix, events, history_frames, history_age)


def event_args(request: PublishRequest, wall: str) -> list[Any]:
    """One event's share of ``PUBLISH_SCRIPT``'s arguments (``wall``: its publish time,
    ms); raises ``PublishError`` (400) if it cannot be encoded."""
    frame = frame_without_id(request)
    return [
        "" if request.id is None else request.id,
        frame,
        wall,
        len(request.topics),
        *request.topics,
    ]


def batch_args(
    prefix: str, events: Sequence[list[Any]], history_frames: int, history_age: float
) -> list[Any]:
    """``PUBLISH_SCRIPT``'s arguments for some events' shares (``event_args``)."""
    args: list[Any] = [
        prefix,
        os.urandom(8).hex(),
        history_frames,
        int(history_age * 1_000_000),
        len(events),
    ]
    for share in events:
        args += share
    return args


def spanning_ids(requests: Sequence[PublishRequest], partitions: int) -> list[PublishRequest]:
    """``requests``, each event without an id whose topics span several partitions given one
    (``x`` and 16 hex digits): every partition then stores it under the same id, and a retry of
    the batch is recognised in each."""
    out = []
    for request in requests:
        if (
            request.id is None
            and len(request.topics) > 1
            and len({partition_of(name, partitions) for name in request.topics}) > 1
        ):
            request = request._replace(id="x" + os.urandom(8).hex())
        out.append(request)
    return out


def split_by_partition(
    requests: Sequence[PublishRequest], partitions: int
) -> dict[int, list[tuple[int, PublishRequest]]]:
    """Each partition's share of a batch: (the request's index in ``requests``, the request with
    only its topics of that partition), in the batch's order. An event spanning partitions
    appears in each (give it an id first: ``spanning_ids``)."""
    shares: dict[int, list[tuple[int, PublishRequest]]] = {}
    for index, request in enumerate(requests):
        by_partition: dict[int, list[str]] = {}
        for name in request.topics:
            by_partition.setdefault(partition_of(name, partitions), []).append(name)
        for partition, names in by_partition.items():
            share = request if len(by_partition) == 1 else request._replace(topics=tuple(names))
            shares.setdefault(partition, []).append((index, share))
    return shares


def partition_publish_args(
    keys: PartitionKeys,
    requests: Sequence[PublishRequest],
    history_frames: int,
    history_age: float,
    command: str = "PUBLISH",
) -> tuple[list[str], list[Any]]:
    """``PARTITION_PUBLISH_SCRIPT``'s KEYS and ARGV for ``requests``, whose topics are all of
    the partition of ``keys``; ``PublishError`` (400) before anything is sent if an event
    cannot be encoded. ``command``: ``SPUBLISH`` on a Cluster, else ``PUBLISH``."""
    streams: dict[str, int] = {}
    retries: list[str] = []
    events: list[Any] = []
    wall = str(int(time.time() * 1000))
    for request in requests:
        frame = frame_without_id(request)
        for name in request.topics:
            streams.setdefault(keys.stream(name), len(streams))
        retry = 0
        if request.id is not None:
            retries.append(keys.retry(request.id, request.topics))
            retry = -len(retries)  # resolved below, once the streams are counted
        events.append((request, frame, retry))
    # KEYS (1-based): position, epoch, floor, names, births, streams, retries
    first_retry = 5 + len(streams)
    args: list[Any] = [
        keys.tagged,
        os.urandom(8).hex(),
        history_frames,
        int(history_age * 1_000_000),
        command,
        len(requests),
    ]
    for request, frame, retry in events:
        index = first_retry - retry if retry else 0
        args += ["" if request.id is None else request.id, frame, wall, index, len(request.topics)]
        args += [6 + streams[keys.stream(name)] for name in request.topics]
    return [*keys.sequence, *keys.directory, *streams, *retries], args
