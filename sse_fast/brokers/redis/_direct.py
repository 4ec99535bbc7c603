"""Publishing straight into Redis, without a node (``publish``): into whatever
layout the fleet recorded there.

Theory of operation
-------------------
A fleet's layout (one sequence, partitions, shards, a Redis Cluster) is recorded
in Redis (``sse:layout``, ``_layout.py``); ``publish`` reads it once per client
and prefix (while there is none, at each publish) and writes where the nodes read:

* no record, or one sequence: ``PUBLISH_SCRIPT`` on today's keys, as before
  (an external publisher of earlier versions sends the same command). Calls made
  together (an app publishing one notification per request it serves, from many
  tasks) go together: one script call carries every call queued while others are
  in flight, each answered with its own id or error, a topic's events in the order
  of the calls (``_publish_batches.py``, as ``sse_fast.Publisher`` does it over
  HTTP): a call made alone goes at once;
* partitions on one Redis, or on a Cluster (``client`` a
  ``redis.asyncio.RedisCluster``, which sends each call to the master of its
  slot): one ``PARTITION_PUBLISH_SCRIPT`` call per partition the event's
  topics fall in (an event spanning partitions without an id gets one, the
  same in each, as the nodes do), publishing with ``SPUBLISH`` on a Cluster;
* shards: ``client`` is one shard's; a topic whose partition lives on another
  shard is refused (``PublishError`` saying which shard, and to publish through
  a node or that shard's client), never written where nobody reads.

A partly written event (one partition published, the next refused) is answered
with ``PublishError``; retrying it with its id is harmless, as for the nodes.

Calls that went together and failed: a script Redis refused (``PublishError``: it
checks every event before it writes any) is called again one call at a time, each
for its own answer; a call whose script got no answer (the connection lost, a
timeout) raises that error, as it would alone.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import MovedError, RedisClusterException, ResponseError

from ..._publish_batches import PublishBatches
from ..._publish_checks import check_event_id, check_topic
from ..._tasks import running_loop
from ...publishing import PublishError, PublishRequest
from ...settings import LimitSettings
from ._partitions import Layout, cluster_tags, layout_key, partition_keys, shard_of
from ._scripts import (
    PARTITION_PUBLISH_SCRIPT,
    PUBLISH_SCRIPT,
    batch_args,
    event_args,
    partition_publish_args,
    sequence_keys,
    spanning_ids,
    split_by_partition,
)

__all__ = ["publish"]

#: each client's layout per prefix, once read (a missing record is not remembered)
_layouts: weakref.WeakKeyDictionary[Any, dict[str, Layout | None]] = weakref.WeakKeyDictionary()
#: each client's calls going together, per event loop, prefix and history limits
_together: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], PublishBatches]] = (
    weakref.WeakKeyDictionary()
)
#: each client's layout read in flight, per prefix (calls made together share it)
_reads: weakref.WeakKeyDictionary[Any, dict[str, asyncio.Future[Layout | None]]] = (
    weakref.WeakKeyDictionary()
)
#: script calls in flight at once for one client's calls going together
IN_FLIGHT = 4
#: events one script call carries at most
EVENTS_PER_CALL = 1000
#: bytes one script call carries at most (an event larger goes alone): a thousand large
#: events in one call would pass Redis's query buffer limit (1 GB) and fail them all
BYTES_PER_CALL = 4 * 1024 * 1024


async def publish(
    client: aioredis.Redis | aioredis.RedisCluster,
    topic: str | Sequence[str],
    data: Any,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    prefix: str = "sse:",
    history_frames: int = 1000,
    history_age: float = 86400.0,
) -> str:
    """Publish one event straight into Redis (every node delivers it); return its
    id. ``client`` is a ``redis.asyncio.Redis`` (a ``redis.asyncio.RedisCluster`` for a
    fleet on a Redis Cluster); ``data`` is sent as text if a string, else as JSON. The
    fleet's layout recorded in Redis says where the event goes. Raises ``PublishError``
    for an event that cannot be published, with the reason."""
    topics = (topic,) if isinstance(topic, str) else tuple(topic)
    limits = _limits()
    for name in topics:
        check_topic(name, limits)
    if id is not None:
        check_event_id(id, limits)
    request = PublishRequest(topics, data, event, id, retry)
    layout = await _layout(client, prefix)
    if layout is None or (layout.partitions == 1 and layout.kind == "single"):
        share = event_args(request, str(int(time.time() * 1000)))  # a bad event fails here
        together = _calls_together(client, prefix, history_frames, history_age)
        return await together.publish(share, topics, id, size=_share_bytes(share))
    try:
        event_id = await _partitioned(client, layout, request, prefix, history_frames, history_age)
    except ResponseError as exc:
        raise PublishError(str(exc)) from None
    return _text(event_id)


@functools.cache
def _limits() -> LimitSettings:
    """The server's default limits, which the events are checked against (made once: a
    frozen dataclass of 17 fields, 1.3 us to make on the bench machine)."""
    return LimitSettings()


def _text(event_id: Any) -> str:
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


def _calls_together(
    client: Any, prefix: str, history_frames: int, history_age: float
) -> PublishBatches:
    """The queue of ``client``'s calls going together into one script call, for this event
    loop, ``prefix`` and history limits."""
    loop = running_loop()
    mine = _together.setdefault(client, {})
    key = (loop, prefix, history_frames, history_age)
    together = mine.get(key)
    if together is None:
        if len(mine) > 16:  # loops that ended (a client reused across asyncio.run calls)
            for old in [k for k in mine if k[0].is_closed()]:
                del mine[old]
        keys = sequence_keys(prefix)
        # held weakly: the queue is the client's value in _together, and a value that
        # held its key would keep both for good
        held = weakref.ref(client)

        async def script(shares: list[list[Any]], idempotent: bool) -> list[str]:
            args = batch_args(prefix, shares, history_frames, history_age)
            redis = held()
            if redis is None:  # pragma: no cover - a caller holds the client while it waits
                raise PublishError("the Redis client is gone", 503)
            try:
                ids = await redis.eval(PUBLISH_SCRIPT, 2, *keys, *args)
            except ResponseError as exc:  # refused, nothing written: each call again alone
                raise PublishError(str(exc)) from None
            return [_text(event_id) for event_id in ids]

        together = mine[key] = PublishBatches(
            script, IN_FLIGHT, EVENTS_PER_CALL, BYTES_PER_CALL, _failed_as_call, join=_joined
        )
    return together


def _share_bytes(share: list[Any]) -> int:
    """About the bytes an event's share of the script's arguments takes on the wire."""
    return sum(len(arg) if isinstance(arg, (str, bytes)) else 8 for arg in share)


def _joined(shares: list[list[Any]]) -> list[list[Any]]:
    return shares


def _failed_as_call(error: Exception, status: int, maybe_published: bool) -> BaseException:
    """A call of a script call that failed raises its error, as it would alone."""
    return error


async def _layout(client: Any, prefix: str) -> Layout | None:
    """The layout recorded under ``prefix``, read once per client; no record is read again
    each time (a fleet's first node writes it at start: a publisher that began earlier
    follows it as soon as it is there). Calls made together share one read: a web app's
    first burst of calls would otherwise open a connection each (redis-py's pool refuses
    past its limit, ``MaxConnectionsError``)."""
    known = _layouts.setdefault(client, {})
    found = known.get(prefix)
    if found is not None:
        return found
    reads = _reads.setdefault(client, {})
    read = reads.get(prefix)
    if read is None or read.get_loop() is not asyncio.get_running_loop():
        read = reads[prefix] = asyncio.ensure_future(_read_layout(client, prefix, known))
        read.add_done_callback(lambda done: _forget_read(reads, prefix, done))
    return await asyncio.shield(read)  # a caller cancelled leaves the read to the others


def _forget_read(reads: dict[str, Any], prefix: str, done: Any) -> None:
    if reads.get(prefix) is done:
        del reads[prefix]
    if not done.cancelled():
        done.exception()  # retrieved: its callers got it


async def _read_layout(client: Any, prefix: str, known: dict[str, Layout | None]) -> Layout | None:
    try:
        record = await client.get(layout_key(prefix))
    except MovedError:
        raise PublishError(
            "this client is one node of a Redis Cluster: give publish() a "
            "redis.asyncio.RedisCluster client, which sends each partition's call to its master"
        ) from None
    known[prefix] = None if record is None else Layout.decode(record)
    return known[prefix]


async def _partitioned(
    client: Any,
    layout: Layout,
    request: PublishRequest,
    prefix: str,
    history_frames: int,
    history_age: float,
) -> Any:
    cluster = layout.kind == "cluster"
    if cluster and not isinstance(client, aioredis.RedisCluster):
        raise PublishError(
            f"the fleet's layout is a Redis Cluster ({layout.describe()}): give publish() a "
            "redis.asyncio.RedisCluster client, which sends each partition's call to its master"
        )
    (request,) = spanning_ids([request], layout.partitions)
    shares = split_by_partition([request], layout.partitions)
    if layout.kind == "shards":
        elsewhere = {
            p: shard_of(p, layout.shards)
            for p in shares
            if shard_of(p, layout.shards) != layout.shard
        }
        if elsewhere:
            names = [t for p in elsewhere for _, share in shares[p] for t in share.topics]
            raise PublishError(
                f"topics {', '.join(names)} live on shard "
                f"{', '.join(str(s + 1) for s in sorted(set(elsewhere.values())))} of "
                f"{layout.describe()}, and this client is shard {layout.shard + 1}'s: publish "
                "through a node (POST /publish, sse_fast.Publisher), or with that shard's client"
            )
    tags = cluster_tags(layout.partitions)
    event_id: Any = None
    done: list[str] = []
    for partition, share in shares.items():
        keys, args = partition_publish_args(
            partition_keys(prefix, tags[partition]),
            [r for _, r in share],
            history_frames,
            history_age,
            "SPUBLISH" if cluster else "PUBLISH",
        )
        try:
            (event_id,) = await client.eval(PARTITION_PUBLISH_SCRIPT, len(keys), *keys, *args)
        except (ResponseError, RedisClusterException) as exc:
            if not done or "sse_fast:" in str(exc):
                raise
            raise PublishError(
                f"partly published: topics {', '.join(done)} have it, the others not ({exc}); "
                f"retry with the same id ({request.id}): a topic that has it does not get it twice"
            ) from None
        done += [t for _, r in share for t in r.topics]
    return event_id
