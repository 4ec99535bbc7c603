"""Publishing: one sequence on one Redis is one script call (``OneSequencePublisher``,
today's keys); a partitioned layout publishes one batch over several Redis
(``ShardedPublisher``), as follows.

A batch is grouped by partition (``spanning_ids`` first: an event to topics of
several partitions without an id gets one, the same in each; then
``split_by_partition``), then by the Redis that holds each partition
(``Placement``). Each Redis gets one pipeline of ``EVALSHA`` of
``PARTITION_PUBLISH_SCRIPT``, one per partition (a script missing there,
``NOSCRIPT``, is loaded and those calls sent again, once), followed by ``WAIT`` on
the same connection when publishes wait for replicas (a ``WAIT`` on another
connection would confirm writes it never saw). The Redis are asked concurrently;
the ids come back in the batch's order.

Each partition's share is all or nothing (one script). When a Redis is down or
does not answer, the shares on the others are published and the answer is 503
with ``Retry-After``, naming the topics that have the events and those that do
not. A Redis known down (``Availability.answers``) is not even tried. What an error
from Redis means (503 or 400, the Redis marked down, a Cluster's map to read
again) is ``_errors.classify``'s table. On a Redis Cluster each master is one of
these Redis, and the script publishes with ``SPUBLISH``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...publishing import PublishError, PublishRequest
from ._errors import RETRY_AFTER, classify, unavailable
from ._scripts import (
    PARTITION_PUBLISH_SCRIPT,
    PUBLISH_SCRIPT,
    partition_publish_args,
    publish_args,
    sequence_keys,
    spanning_ids,
)
from ._scripts import split_by_partition as split

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ._connection import Connection
    from ._member_options import MemberOptions
    from ._placement import Placement

__all__ = [
    "WAIT_MS",
    "OneSequencePublisher",
    "PartitionCall",
    "ShardedPublisher",
]

log = logging.getLogger("sse_fast.redis")

#: how long a publish waits for ``--redis-wait-replicas`` replicas to confirm it (ms)
WAIT_MS = 1000
#: one partition's share of a batch: (partition, [(index in the batch, request)], KEYS, ARGV)
PartitionCall = tuple[int, list[tuple[int, PublishRequest]], list[str], list[Any]]


class ShardedPublisher:
    """Publishes a member's batches over the partitions of several Redis (or one)."""

    def __init__(
        self,
        options: MemberOptions,
        placement: Placement,
        connections: Sequence[Connection],
        suspect: Callable[[], None],
    ) -> None:
        self.options = options
        self.placement = placement
        #: the member's connections (the feed's list: a Cluster's grows as masters are met)
        self.connections = connections
        #: a sign that a Cluster's slot map moved (read it again in the background)
        self.suspect = suspect

    def start(self) -> None:
        """Nothing to make: each Redis's script is registered on its connection's client."""

    async def publish(self, requests: list[PublishRequest]) -> list[str]:
        """Sequence ``requests`` in their partitions and return their ids; ``PublishError`` 400 for
        an event that cannot be encoded (nothing sent), 503 when a Redis is down (saying which
        topics have the events), does not answer, or too few replicas confirmed."""
        options = self.options
        placement = self.placement
        requests = spanning_ids(requests, placement.partitions)
        by_shard: dict[int, list[PartitionCall]] = {}
        for partition, share in split(requests, placement.partitions).items():
            keys, args = partition_publish_args(
                placement.keys(partition),
                [request for _, request in share],
                options.history_frames,
                options.history_age,
                "SPUBLISH" if options.cluster else "PUBLISH",
            )
            shard = placement.shard_of(partition)
            by_shard.setdefault(shard, []).append((partition, share, keys, args))
        shards = list(by_shard)
        results: list[Any]
        if len(shards) == 1:  # one Redis: no task to run beside this one
            try:
                results = [await self._on(self.connections[shards[0]], by_shard[shards[0]])]
            except PublishError as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self._on(self.connections[s], by_shard[s]) for s in shards),
                return_exceptions=True,
            )
        ids = [""] * len(requests)
        failed: list[tuple[int, PublishError]] = []
        for shard, result in zip(shards, results, strict=True):
            if isinstance(result, PublishError):
                failed.append((shard, result))
            elif isinstance(result, BaseException):
                raise result
            else:
                for (_, share, _, _), got in zip(by_shard[shard], result, strict=True):
                    for (index, _), event_id in zip(share, got, strict=True):
                        ids[index] = event_id.decode() if isinstance(event_id, bytes) else event_id
        if failed:
            raise _refusal(by_shard, failed)
        return ids

    async def _on(self, connection: Connection, calls: list[PartitionCall]) -> list[Any]:
        """Run ``calls`` on ``connection``'s Redis in one pipeline (NOSCRIPT: loaded, sent again
        once); the ids of each call."""
        wait_replicas = self.options.wait_replicas
        if connection.client is None or not connection.availability.answers:
            raise unavailable(f"{connection} does not answer")
        client = connection.client
        sha = connection.script(PARTITION_PUBLISH_SCRIPT).sha
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        replicas = wait_replicas
        try:
            if len(calls) == 1 and not wait_replicas:  # one call: no pipeline needed
                _, _, keys, args = calls[0]
                results[0] = await connection.script(PARTITION_PUBLISH_SCRIPT)(keys=keys, args=args)
                pending = []
            for attempt in range(2 if pending else 0):
                async with client.pipeline(transaction=False) as pipe:
                    for i in pending:
                        _, _, keys, args = calls[i]
                        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
                    if wait_replicas:
                        pipe.execute_command("WAIT", wait_replicas, WAIT_MS)
                    replies = await pipe.execute(raise_on_error=False)
                if wait_replicas:
                    replicas = min(replicas, replies.pop())
                missing = []
                for i, reply in zip(pending, replies, strict=True):
                    if isinstance(reply, NoScriptError) and attempt == 0:
                        missing.append(i)
                    elif isinstance(reply, BaseException):
                        raise reply
                    else:
                        results[i] = reply
                if not missing:
                    break
                await client.script_load(PARTITION_PUBLISH_SCRIPT)  # a restarted Redis
                pending = missing
        except Exception as exc:  # one table says what it means (``_errors.py``)
            failure = classify(exc, str(connection))
            if failure is None:
                raise
            if failure.unanswered:
                connection.availability.unanswered()
            if failure.unanswered or failure.rehome:
                self.suspect()  # a Cluster's master gone or moved: read the map again
            if failure.ours:
                log.error("%s refused a publish's keys: %s", connection, exc)
            raise failure.error from None
        connection.availability.answered()
        if replicas < wait_replicas:
            raise PublishError(
                f"{connection} published it, but {replicas} of {wait_replicas} replicas "
                f"confirmed it within {WAIT_MS} ms: it is lost if that Redis fails over now (it "
                "was delivered; give events ids to recognise them if you retry)",
                status=503,
                retry_after=RETRY_AFTER,
            )
        return results


def _names(topics: Sequence[str]) -> str:
    shown = ", ".join(topics[:10])
    return shown + (f" and {len(topics) - 10} more" if len(topics) > 10 else "")


def _refusal(
    by_shard: dict[int, list[PartitionCall]], failed: list[tuple[int, PublishError]]
) -> PublishError:
    """The one error of a batch some of whose Redis refused it: which topics have it, which
    not, and why."""
    bad = {shard for shard, _ in failed}
    have: dict[str, None] = {}
    lack: dict[str, None] = {}
    for shard, calls in by_shard.items():
        for _, share, _, _ in calls:
            for _, request in share:
                (lack if shard in bad else have).update(dict.fromkeys(request.topics))
    why = "; ".join(str(error) for _, error in failed)
    status = max(error.status for _, error in failed)
    retry_after = max((error.retry_after or 0.0) for _, error in failed) or None
    if not have:
        return PublishError(why, status=status, retry_after=retry_after)
    return PublishError(
        f"partly published: topics {_names(list(have))} have it; {_names(list(lack))} do not "
        f"({why}). Retrying the same request is safe for events with an id (a topic that has "
        "one does not get it twice); events without an id would be published again on the "
        "topics that have them",
        status=status,
        retry_after=retry_after,
    )


class OneSequencePublisher:
    """Publishes a member's batches to the one sequence on one Redis (today's keys, one
    ``PUBLISH_SCRIPT`` call each): it owns the script, registered on that Redis's client
    once the connection made it (``start``), and the keys."""

    def __init__(self, options: MemberOptions, connection: Connection) -> None:
        self.options = options
        self.connection = connection
        self.keys = sequence_keys(options.prefix)
        self.client: aioredis.Redis | None = None
        self.script: Any = None

    def start(self) -> None:
        """Register the script on the connection's client (made by ``Connection.start``)."""
        self.client = self.connection.client
        assert self.client is not None
        self.script = self.client.register_script(PUBLISH_SCRIPT)

    async def publish(self, requests: list[PublishRequest]) -> list[str]:
        """``requests`` sequenced by one script call; their ids, or ``PublishError`` as
        ``RedisBroker.publish`` says."""
        # Tried even while this member's subscription is being repaired: the
        # publish goes to Redis, and this member's streams get it with the repair.
        if self.script is None:
            raise unavailable("not connected")
        availability = self.connection.availability
        if not availability.answers:  # known down: refused at once, not after a timeout
            raise unavailable("it does not answer")
        assert self.client is not None
        options = self.options
        wait_replicas = options.wait_replicas
        args = publish_args(options.prefix, requests, options.history_frames, options.history_age)
        try:
            if wait_replicas:
                async with self.client.pipeline(transaction=False) as pipe:  # one round trip
                    await self.script(keys=self.keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", wait_replicas, WAIT_MS)
                    ids, replicas = await pipe.execute()
            else:
                ids = await self.script(keys=self.keys, args=args)
                replicas = 0
        except ResponseError as exc:
            if "sse_fast:" in str(exc):
                raise PublishError(str(exc)) from None
            raise unavailable(str(exc)) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            availability.unanswered()
            raise PublishError(
                f"Redis did not answer ({exc}): the publish may or may not have been "
                "published (give events ids to recognise them on retry)",
                status=503,
                retry_after=RETRY_AFTER,
            ) from None
        availability.answered()
        if replicas < wait_replicas:
            raise PublishError(
                f"Redis published it, but {replicas} of {wait_replicas} replicas confirmed "
                f"it within {WAIT_MS} ms: it is lost if Redis fails over now (it was delivered; "
                "give events ids to recognise them if you retry)",
                status=503,
                retry_after=RETRY_AFTER,
            )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
