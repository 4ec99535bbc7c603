"""``RedisBroker``: one member (a worker of a node) of the sequence kept in Redis.

The broker connects and closes, says whether it can publish, publishes, and
reports. What it is delivered comes through its ``Feed`` (``_feed.py``); its
probes and gathers go over the node's channel (``_probes.py``). Both are parts
it owns and builds. Each piece of the member's state has one owner, which alone
changes it, through named operations; the others read it or ask:

* the feed: the topics held, and what it read of the sequence (``Known``: the
  newest position seen, the horizon, the epoch, ``first_position``, the counts
  of reconnects, repairs and breaks), which the broker's ``first_position``,
  ``horizon`` and ``stats`` read;
* ``Availability`` (``_availability.py``): up or down, told by the feed (the
  subscription), and by the publishes, probes and resyncs (whether Redis answers);
* the broker: its settings, the client and scripts, and ``closing``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._tasks import stop_task
from ...publishing import PublishError, PublishRequest
from .. import Broker
from ._availability import Availability
from ._feed import Feed
from ._presence import RedisPresence
from ._probes import Probes
from ._scripts import (
    ADVANCE_SCRIPT,
    PUBLISH_SCRIPT,
    READ_SCRIPT,
    connect,
    node_channel,
    publish_args,
    sequence_keys,
)

__all__ = [
    "RETRY_AFTER",
    "WAIT_MS",
    "RedisBroker",
]

#: seconds a client refused while Redis is away is told to wait (``Retry-After``)
RETRY_AFTER = 1.0
#: how long a publish waits for ``--redis-wait-replicas`` replicas to confirm it (ms)
WAIT_MS = 1000  # --redis-wait-replicas: how long a publish waits for its replicas


class RedisBroker(Broker):
    """A member (one worker of one node) of a sequence kept in Redis."""

    stores_every_topic = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sse:",
        history_frames: int = 1000,
        history_age: float = 86400.0,
        probe_interval: float = 5.0,
        load_frames: int = 1024,
        node: str | None = None,
        workers: int = 1,
        wait_replicas: int = 0,
    ) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.history_frames = history_frames
        self.history_age = history_age
        self.probe_interval = probe_interval
        self.load_frames = load_frames
        self.node = node or uuid.uuid4().hex[:12]
        self.workers = workers
        self.wait_replicas = wait_replicas
        self.member_id = uuid.uuid4().hex[:12]
        self.keys = sequence_keys(prefix)
        self.node_channel = node_channel(prefix, self.node)
        self.client: aioredis.Redis | None = None
        self.publish_script: Any = None
        self.read_script: Any = None
        self.advance_script: Any = None
        #: up or down: the subscription is live and Redis answered the last command
        self.availability = Availability()
        self.closing = False
        self.feed = Feed(self)
        self.probes = Probes(self)

    # The feed owns what it read (``Known``); the contract's names read it.

    @property
    def first_position(self) -> int:  # type: ignore[override]  # read-only: the feed moves it
        """The oldest position this member may claim to know (raised by a break)."""
        return self.feed.known.first_position

    @property
    def horizon(self) -> int:  # type: ignore[override]  # read-only: the feed moves it
        """The newest position a history read found handed out."""
        return self.feed.known.horizon

    # ---------------------------------------------------------------- running

    async def start(self) -> None:
        """Connect, subscribe and start probing; ``ConnectionError`` when the subscription is not
        live within 10 s."""
        self.client = connect(self.url)
        self.publish_script = self.client.register_script(PUBLISH_SCRIPT)
        self.read_script = self.client.register_script(READ_SCRIPT)
        self.advance_script = self.client.register_script(ADVANCE_SCRIPT)
        ready = self.feed.start()
        self.probes.start()
        try:
            await asyncio.wait_for(ready.wait(), 10)
        except TimeoutError:
            await self.close()
            raise ConnectionError(
                f"cannot reach Redis at {self.url} (is redis-server running? check --redis-url)"
            ) from None

    async def close(self) -> None:
        """Stop the subscription, the probes and the history loads, and close the client."""
        self.closing = True
        for task in (self.feed.task, self.probes.task, *self.feed.loads):
            await stop_task(task)
        await self.feed.drop()
        if self.client is not None:
            await self.client.aclose()
        self.availability.subscription_lost()

    # ---------------------------------------------------------------- availability

    @property
    def available(self) -> bool:
        """Whether the subscription is live and Redis answered the last command."""
        return self.availability.up

    @property
    def unavailable_for(self) -> float:
        """Seconds since Redis became unavailable (0 while it is available)."""
        return self.availability.down_for()

    def unavailable_error(self, why: str) -> PublishError:
        """The 503 that refuses a publish or a stream while Redis is away."""
        return PublishError(
            f"Redis unavailable ({why}); try again shortly", status=503, retry_after=RETRY_AFTER
        )

    # ---------------------------------------------------------------- topics, nodes

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        """Subscribe to the topics of ``names`` this member does not hold yet and load their
        history (``Feed.prepare``); None when every one is held and loaded."""
        return self.feed.prepare(names)

    def release(self, name: str) -> None:
        """Unsubscribe from topic ``name`` (``Feed.release``)."""
        self.feed.release(name)

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker of this node, through the node's channel; this worker
        alone when Redis is away."""
        return await self.probes.gather(query)

    def _presence(self) -> RedisPresence:
        if self.client is None or not self.available:
            raise RuntimeError("Redis is away")
        return RedisPresence(self.client, self.prefix, self.member_id)

    async def store_presence(self, figures: dict[str, dict[str, Any]]) -> None:
        """Write this worker's presence figures of these topics to Redis; ``RuntimeError`` while
        Redis is away."""
        await self._presence().store(figures)

    async def read_presence(self, topic: str) -> list[dict[str, Any]] | None:
        """Every live worker's presence figures of ``topic``, read from Redis; ``RuntimeError``
        while Redis is away."""
        return await self._presence().read(topic)

    # ---------------------------------------------------------------- publishing

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Sequence ``requests`` in Redis (one script call) and return their ids; ``PublishError``
        400 for a refused batch, 503 while Redis is away, does not answer, or (with
        ``wait_replicas``) too few replicas confirmed it."""
        # Tried even while this member's subscription is being repaired: the
        # publish goes to Redis, and this member's streams get it with the repair.
        if self.publish_script is None:
            raise self.unavailable_error("not connected")
        if not self.availability.answers:  # known down: refused at once, not after a timeout
            raise self.unavailable_error("it does not answer")
        assert self.client is not None
        args = publish_args(self.prefix, requests, self.history_frames, self.history_age)
        try:
            if self.wait_replicas:
                async with self.client.pipeline(transaction=False) as pipe:  # one round trip
                    await self.publish_script(keys=self.keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", self.wait_replicas, WAIT_MS)
                    ids, replicas = await pipe.execute()
            else:
                ids = await self.publish_script(keys=self.keys, args=args)
                replicas = 0
        except ResponseError as exc:
            if "sse_fast:" in str(exc):
                raise PublishError(str(exc)) from None
            raise self.unavailable_error(str(exc)) from None
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.availability.unanswered()
            raise PublishError(
                f"Redis did not answer ({exc}): the publish may or may not have been "
                "published (give events ids to recognise them on retry)",
                status=503,
                retry_after=RETRY_AFTER,
            ) from None
        self.availability.answered()
        if replicas < self.wait_replicas:
            raise PublishError(
                f"Redis published it, but {replicas} of {self.wait_replicas} replicas confirmed "
                f"it within {WAIT_MS} ms: it is lost if Redis fails over now (it was delivered; "
                "give events ids to recognise them if you retry)",
                status=503,
                retry_after=RETRY_AFTER,
            )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def stats(self) -> dict[str, Any]:
        """``/stats``' ``redis`` section: connected, node, topics subscribed, reconnects, repairs
        and history breaks."""
        known = self.feed.known
        return {
            "redis": {
                "connected": self.available,
                "node": self.node,
                "topics_subscribed": len(self.feed.held),
                "reconnects": known.reconnects,
                "repairs": known.repairs,
                "history_breaks": known.history_breaks,
            }
        }
