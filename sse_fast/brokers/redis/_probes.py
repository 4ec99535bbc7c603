"""Probes and gathers: what a member says on its probe and node channels.

* Probes. Each of a member's connections (one per Redis) probes its own
  subscription: every ``probe_interval`` (every 0.25 s while that Redis is known
  down) it publishes a numbered probe on its probe channel (with one sequence the
  node's channel ``sse:n:<node>``; on shards ``P{T}:n:<member>``, ``T`` a
  partition of that Redis). Publishing tells whether that Redis answers (the
  connection's ``Availability``); the probe coming back on the subscription tells
  whether it is alive: one not back within twice the interval means a stale
  subscription, and the connection replaces it. Only probes sent while the
  subscription is live count, and those not back when it is replaced are forgotten:
  a probe published while it was away or being made (a failover: the new primary
  answers before the subscription to it is made) never comes back, and taking the
  next subscription for stale on its account replaced a sound one, again and again
  on a loaded machine (each replacement a new gap for the next probe to fall in).
  A probe that fails otherwise than by Redis (a bug, a library's surprise) is
  logged with its traceback, and probing goes on.
* Births. On a partitioned layout each probe also moves where the connection's
  births are done (``NewTopics.confirm``), so that pattern streams' cursors move in
  partitions where nothing is born.
* Gathers. ``/metrics`` and ``/stats`` answer for every worker of the node:
  the asking member publishes the query on the node's channel (on the first
  Redis), every member pushes its figures to a fresh list, and the asking one
  reads them for up to a second. Alone when that Redis is away.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from ..._tasks import carry_on
from ._errors import classify
from ._state import Reconnect, ignore_result

if TYPE_CHECKING:
    from .. import Membership
    from ._connection import Connection
    from ._member_options import MemberOptions
    from ._placement import Placement

__all__ = [
    "NodeGather",
    "Probes",
]

log = logging.getLogger("sse_fast.redis")


class Probes:
    """One connection's probes of its subscription; gathers to answer that arrive on it."""

    def __init__(
        self,
        options: MemberOptions,
        placement: Placement,
        membership: Membership,
        connection: Connection,
        suspect: Callable[[], None],
    ) -> None:
        self.options = options
        self.placement = placement
        self.membership = membership
        self.connection = connection
        #: a sign that a Cluster's slot map moved (read it again in the background)
        self.suspect = suspect
        self.task: asyncio.Task[None] | None = None
        self._numbers = itertools.count(1)
        #: probes not back yet: number -> when sent (monotonic)
        self._sent: dict[int, float] = {}

    def start(self) -> None:
        """Start probing the subscription in a task (every ``probe_interval`` seconds, every 0.25 s
        while this Redis is known down)."""
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        connection = self.connection
        while not self.membership.closing:
            # known down: probe often, so publishing comes back soon after Redis does
            answers = connection.availability.answers
            await asyncio.sleep(self.options.probe_interval if answers else 0.25)
            if connection.client is None:
                continue
            # a bug, a library's surprise: probing goes on (else no stale subscription would
            # be found again, nor Redis coming back)
            with carry_on(f"{connection}: probing", log):
                await self._probe()

    async def _probe(self) -> None:
        """Publish one probe (whether Redis answers); with partitions, move the births."""
        options = self.options
        connection = self.connection
        availability = connection.availability
        number = next(self._numbers)
        # counted as sent before it is: it may come back before PUBLISH's answer does;
        # only on a live subscription (one sent while it is away or being made is lost
        # with it, no sign that the next one is stale)
        if connection.live:
            self._sent[number] = time.monotonic()
        try:
            await connection.send(
                connection.probe_channel, f"probe {options.member_id} {number}".encode()
            )
            availability.answered()
        except (RedisError, OSError) as exc:
            self._sent.pop(number, None)
            failure = classify(exc)
            if failure is not None and failure.rehome:  # answered: its slot moved away
                self.suspect()
                return
            if availability.unanswered():
                log.error(
                    "%s does not answer (%s): publishing %sis unavailable",
                    connection,
                    exc,
                    "" if self.placement.shards == 1 else "to its partitions ",
                )
            return
        except BaseException:
            self._sent.pop(number, None)  # (not sent: not awaited)
            raise
        if not self.placement.single:  # pattern streams' cursors move (``_new_topics``)
            try:
                await connection.new_topics.confirm()
            except (RedisError, OSError) as exc:  # the next probe tries again
                log.debug("%s: births not confirmed (%r)", connection, exc)

    def reset(self) -> None:
        """Forget the probes not back: the subscription they were sent to is gone (lost,
        replaced, or the connection retired), and a new one is judged by its own."""
        self._sent.clear()

    def check(self) -> None:
        """Raise ``Reconnect`` if a probe is overdue (a stale subscription)."""
        if not self._sent:
            return
        oldest = min(self._sent.values())
        interval = self.options.probe_interval
        if time.monotonic() - oldest > interval * 2:
            self._sent.clear()
            raise Reconnect(f"no probe came back within {interval * 2:g} s (a stale subscription)")

    def message(self, data: bytes) -> None:
        """A message on a probe or node channel: a probe back, or a gather to answer."""
        member_id = self.options.member_id
        kind, _, rest = data.partition(b" ")
        if kind == b"probe":
            member, _, number = rest.partition(b" ")
            if member.decode() == member_id:
                self._sent.pop(int(number), None)
        elif kind == b"gather":
            key, _, query = rest.partition(b" ")
            figures = self.membership.member.report(orjson.loads(query))
            figures["worker"] = None
            figures["member"] = member_id
            task = asyncio.get_running_loop().create_task(self._answer(key.decode(), figures))
            task.add_done_callback(ignore_result)

    async def _answer(self, key: str, figures: dict[str, Any]) -> None:
        assert self.connection.client is not None
        async with self.connection.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, orjson.dumps(figures))
            pipe.expire(key, 10)
            await pipe.execute()


class NodeGather:
    """A member's gathers across its node, over the node's channel on the Redis holding
    partition 0 (the first Redis; a Cluster's master of that slot)."""

    def __init__(
        self,
        options: MemberOptions,
        placement: Placement,
        membership: Membership,
        connections: Sequence[Connection],
    ) -> None:
        self.options = options
        self.placement = placement
        self.membership = membership
        #: the member's connections (the feed's list: a Cluster's grows as masters are met)
        self.connections = connections

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker of this node, through the node's channel; this worker
        alone when that Redis is away."""
        options = self.options
        placement = self.placement
        connection = self.connections[placement.shard_of(0)] if self.connections else None
        client = None if connection is None else connection.client
        mine = {**self.membership.member.report(query), "worker": None, "member": options.member_id}
        if options.workers <= 1 or connection is None or client is None:
            return [mine]
        if not connection.availability.up:
            return [mine]
        key = placement.gather_key()
        try:
            await connection.send(
                placement.node_channel(options.node),
                b"gather %s %s" % (key.encode(), orjson.dumps(query)),
            )
            figures: list[dict[str, Any]] = []
            deadline = time.monotonic() + 1.0
            while len(figures) < options.workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reply = await client.blpop([key], timeout=max(0.01, remaining))
                if reply is None:
                    break
                figures.append(orjson.loads(reply[1]))
        except (RedisError, OSError):
            return [mine]
        if not any(f.get("member") == options.member_id for f in figures):
            figures.append(mine)
        for number, figure in enumerate(sorted(figures, key=lambda f: f.get("pid", 0))):
            figure["worker"] = number
        return figures
