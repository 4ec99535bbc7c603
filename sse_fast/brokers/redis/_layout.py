"""The layout check at start: every Redis of the layout holds the record of one
layout, the one this node is configured with, or the node does not start.

Theory of operation
-------------------
Nodes that disagree on the layout (the URLs' order, the partition count, one
Redis or shards) publish into keys the others never read: their subscribers
would miss events without a word. So the layout is recorded in Redis
(``_partitions.Layout``, at ``layout_key(prefix)``) and checked by the main
process of ``sse-fast serve`` before any worker starts (``check_layout``):

1. Read every Redis's record, and whether it holds a one-sequence fleet's
   ``sse:position``.
2. Where no Redis has one, this node makes the layout: ``SET NX`` of a fresh
   record on the first Redis, read back (two nodes starting together agree on
   whichever was written first). A Redis without a record (new, or restarted
   empty) gets the layout's record with its own place, ``SET NX`` too.
3. Each record is compared with this node's configuration
   (``_partitions.layout_refusal``): the first difference is the one sentence
   the start fails with.

A Redis that does not answer is skipped with a warning: the workers connect
to it later (a shard down at start is a shard down, not a wrong layout).

A Redis Cluster (``redis-cluster://``) holds one record, kind ``cluster``, on
the master owning the record key's slot (``check_cluster``). Its masters must
run Redis 7.0 or newer (sharded pub/sub: refused otherwise), and a Cluster
that stops every slot when one is lost (``cluster-require-full-coverage yes``)
is said in a warning. A Cluster node given as ``redis://`` is refused: its
slots would split the one sequence; the sentence says to give
``redis-cluster://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis as redis_py
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ._cluster import (
    FULL_COVERAGE_WARNING,
    SCHEMES,
    UNCHECKED_COVERAGE_WARNING,
    Topology,
    version_refusal,
)
from ._partitions import Layout, layout_key, layout_refusal, new_layout
from ._scripts import close_client, connect

__all__ = ["CHECK_TIMEOUT", "check_cluster", "check_layout", "configured_layout"]

log = logging.getLogger("sse_fast.redis")

#: seconds the start waits for each Redis to answer the layout check
CHECK_TIMEOUT = 3.0

_CLUSTER = (
    "--redis-url {url} points at a Redis Cluster node (INFO cluster says cluster_enabled:1), "
    "given as one Redis: its hash slots would split the sequence; give the Cluster as "
    "redis-cluster://host:port[,host:port...] (its nodes are found from these seeds)"
)


def configured_layout(urls: Sequence[str], partitions: int, shard: int = 0) -> Layout:
    """What a node given ``urls`` and ``partitions`` expects the Redis at index ``shard`` to
    hold (no layout id, time or node: those are the record's)."""
    if urls and urls[0].startswith(SCHEMES):
        return Layout("cluster", partitions)
    kind = "shards" if len(urls) > 1 else "single"
    return Layout(kind, partitions, len(urls), shard)


class _Redis:
    """One Redis of the layout as the check sees it."""

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url
        self.client: Any = None
        self.record: bytes | None = None
        self.single_sequence = False
        self.cluster = False
        self.answered = False


async def _read(redis: _Redis, prefix: str, timeout: float) -> None:
    client = redis.client
    async with asyncio.timeout(timeout):
        info = await client.info("cluster")
    redis.cluster = str(info.get("cluster_enabled", "0")) == "1"
    if redis.cluster:
        redis.answered = True
        return
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(layout_key(prefix))
        pipe.exists(prefix + "position")
        async with asyncio.timeout(timeout):
            redis.record, exists = await pipe.execute()
    redis.single_sequence = bool(exists)
    redis.answered = True


async def _fill_directory(redis: _Redis, prefix: str, timeout: float) -> None:
    """A Redis of one sequence written by a version without the directory of topics
    (``names``, pattern streams: ``_new_topics.py``): every topic with a stream enters it,
    once (the directory exists afterwards; the publish script keeps it from then on)."""
    client = redis.client
    names_key = prefix + "names"
    async with asyncio.timeout(timeout):
        named = await client.exists(names_key)
    if named:
        return
    streams = prefix + "t:"
    match = re.sub(r"([*?\[\]\\])", r"\\\1", streams) + "*"
    found: list[bytes] = []
    filled = 0
    async for key in client.scan_iter(match=match, count=1000, _type="STREAM"):
        found.append(key[len(streams) :])
        if len(found) >= 1000:
            filled += await client.zadd(names_key, dict.fromkeys(found, 0), nx=True)
            found = []
    if found:
        filled += await client.zadd(names_key, dict.fromkeys(found, 0), nx=True)
    if filled:
        log.info("%d topics entered Redis's directory of topics (pattern streams)", filled)


#: on a partitioned layout's Redis (each shard; a Cluster's in a slot of its own): the
#: streams there entered their partitions' directories once (``_fill_partitions``)
DIRECTORY_FILLED = "directory"


async def _fill_partitions(
    clients: Sequence[aioredis.Redis], marker: aioredis.Redis, prefix: str, timeout: float
) -> None:
    """A partitioned layout written by a version without directories of topics (pattern
    streams: ``_new_topics.py``): the topic of every stream on ``clients`` (the shards, or a
    Cluster's masters) enters its partition's ``names``, once (``DIRECTORY_FILLED`` on
    ``marker`` says it was done; the publish script keeps them from then on)."""
    done = prefix + DIRECTORY_FILLED
    async with asyncio.timeout(timeout):
        done_before = await marker.exists(done)
    if done_before:
        return
    match = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "{*}:t:*"
    filled = 0
    for client in clients:
        found: dict[bytes, list[bytes]] = {}
        async for key in client.scan_iter(match=match, count=1000, _type="STREAM"):
            tagged, _, rest = key.partition(b"}:")
            found.setdefault(tagged + b"}:names", []).append(rest[2:])
        for names, topics in found.items():
            for start in range(0, len(topics), 1000):
                chunk = dict.fromkeys(topics[start : start + 1000], 0)
                async with asyncio.timeout(timeout):
                    added: Any = await client.zadd(names, chunk, nx=True)
                filled += int(added)
    async with asyncio.timeout(timeout):
        await marker.set(done, "1")
    if filled:
        log.info("%d topics entered their partitions' directories (pattern streams)", filled)


async def _claim(redis: _Redis, prefix: str, record: Layout, timeout: float) -> None:
    """Write ``record`` where there is none yet, and read back what is there."""
    key = layout_key(prefix)
    async with asyncio.timeout(timeout):
        await redis.client.set(key, record.encode(), nx=True)
    async with asyncio.timeout(timeout):
        redis.record = await redis.client.get(key)


async def check_layout(
    urls: Sequence[str],
    partitions: int,
    prefix: str = "sse:",
    node: str = "",
    timeout: float = CHECK_TIMEOUT,
) -> str | None:
    """The sentence to refuse this node's start with, or None: the Redis at ``urls`` hold the
    layout this node is configured with (``partitions``), recorded now where none was."""
    if urls and urls[0].startswith(SCHEMES):
        return await check_cluster(urls[0], partitions, prefix, node, timeout)
    found = [_Redis(i, url) for i, url in enumerate(urls)]
    try:
        for redis in found:
            redis.client = connect(redis.url)
        await asyncio.gather(*(_safely(_read(r, prefix, timeout), r) for r in found))
        answering = [r for r in found if r.answered]
        cluster = next((r for r in answering if r.cluster), None)
        if cluster is not None:
            return _CLUSTER.format(url=_shown(cluster.url))
        refusal = _compare(answering, urls, partitions)  # what is there already
        if refusal:
            return refusal
        recorded = [r for r in answering if r.record is not None]
        base = (
            Layout.decode(recorded[0].record or b"")
            if recorded
            else new_layout(configured_layout(urls, partitions).kind, partitions, len(urls), node)
        )
        for redis in answering:  # in the URLs' order: two nodes starting together agree
            if redis.record is None:
                await _safely(
                    _claim(redis, prefix, replace(base, shard=redis.index), timeout), redis
                )
                if redis.record is not None:  # this one's, or the one another node wrote first
                    base = Layout.decode(redis.record)
        refusal = _compare([r for r in answering if r.answered], urls, partitions)
        if refusal:
            return refusal
        for redis in found:
            if not redis.answered:
                log.warning(
                    "Redis %s did not answer the layout check: it is checked when it is back",
                    _shown(redis.url),
                )
        if base.partitions == 1 and found[0].answered:
            await _safely(_fill_directory(found[0], prefix, timeout), found[0])
        elif base.partitions > 1:
            for redis in answering:
                assert redis.client is not None
                filling = _fill_partitions([redis.client], redis.client, prefix, timeout)
                await _safely(filling, redis)
        return None
    finally:
        for redis in found:
            if redis.client is not None:
                with contextlib.suppress(Exception):
                    await close_client(redis.client)


async def check_cluster(
    url: str,
    partitions: int,
    prefix: str = "sse:",
    node: str = "",
    timeout: float = CHECK_TIMEOUT,
) -> str | None:
    """``check_layout`` for the Redis Cluster at ``url``: masters new enough, and the record
    of one layout (kind ``cluster``, ``partitions``), written now where there is none."""
    if not hasattr(PubSub, "ssubscribe"):
        return (
            f"redis-py {redis_py.__version__} has no sharded pub/sub (SSUBSCRIBE), which a Redis "
            "Cluster needs: pip install -U 'redis[hiredis]'"
        )
    topology = Topology(url, partitions)
    try:
        try:
            await topology.refresh(timeout)
        except ConnectionError as exc:
            log.warning("the Redis Cluster did not answer the layout check (%s)", exc)
            return None
        async with asyncio.timeout(timeout):
            versions = await topology.versions()
        refusal = version_refusal(versions)
        if refusal:
            return refusal
        async with asyncio.timeout(timeout):
            stops_all = await topology.uncovered_stops_all()
        if stops_all:
            log.warning(FULL_COVERAGE_WARNING)
        elif stops_all is None:
            log.warning(UNCHECKED_COVERAGE_WARNING)
        key = layout_key(prefix)
        master = topology.master_of_key(key)
        if master is None:
            log.warning("the Redis Cluster's slot of %s has no master: not checked", key)
            return None
        client = topology.client(master)
        record = new_layout("cluster", partitions, 1, node)
        try:
            async with asyncio.timeout(timeout):
                await client.set(key, record.encode(), nx=True)
            async with asyncio.timeout(timeout):
                found = await client.get(key)
        except (RedisError, OSError, TimeoutError) as exc:  # its master down: a fault
            log.warning("the Redis Cluster's layout record could not be read (%r)", exc)
            return None
        refusal = layout_refusal(found, configured_layout([url], partitions), url)
        if refusal is None:
            masters = [topology.client(address) for address in topology.masters]
            try:
                await _fill_partitions(masters, client, prefix, timeout)
            except (RedisError, OSError, TimeoutError) as exc:  # tried again at the next start
                log.warning("the Redis Cluster's directories of topics were not filled (%r)", exc)
        return refusal
    finally:
        await topology.close()


def _compare(answering: list[_Redis], urls: Sequence[str], partitions: int) -> str:
    """The first refusal among the records read (one layout id for all), or ""."""
    layout_id: str | None = None
    for redis in answering:
        refusal = layout_refusal(
            redis.record,
            configured_layout(urls, partitions, redis.index),
            redis.url,
            layout_id=layout_id,
            single_sequence=redis.single_sequence,
        )
        if refusal:
            return refusal
        if redis.record is not None and layout_id is None:
            layout_id = Layout.decode(redis.record).layout
    return ""


async def _safely(step: Any, redis: _Redis) -> None:
    """``step``, or nothing when this Redis does not answer (marked as such)."""
    try:
        await step
    except Exception as exc:  # down, refused, no INFO right, a Redis still starting
        log.debug("layout check of %s: %r", _shown(redis.url), exc)
        redis.answered = False


def _shown(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//", url)  # no password in a sentence
