"""Probes and gathers: what a member says on its node's channel (``sse:n:<node>``).

* Probes. Every ``probe_interval`` (every 0.25 s while Redis is known down) a
  member publishes a numbered probe on its node's channel. Publishing tells
  whether commands work (the member's ``Availability``); the probe coming back on the
  subscription tells whether it is alive: one not back within twice the
  interval means a stale subscription, and the feed replaces it.
* Gathers. ``/metrics`` and ``/stats`` answer for every worker of the node:
  the asking member publishes the query on the node's channel, every member
  pushes its figures to a fresh list, and the asking one reads them for up to
  a second. Alone when Redis is away.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from ._feed import Reconnect, ignore_result
from ._scripts import gather_key

if TYPE_CHECKING:
    from ._broker import RedisBroker

__all__ = [
    "Probes",
]

log = logging.getLogger("sse_fast.redis")


class Probes:
    """A member's probes of its subscription, and its gathers across the node."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.task: asyncio.Task[None] | None = None
        self._numbers = itertools.count(1)
        #: probes not back yet: number -> when sent (monotonic)
        self._sent: dict[int, float] = {}

    def start(self) -> None:
        """Start probing the subscription in a task (every ``probe_interval`` seconds, every 0.25 s
        while Redis is known down)."""
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        broker = self.broker
        while not broker.closing:
            # known down: probe often, so publishing comes back soon after Redis does
            availability = broker.availability
            await asyncio.sleep(broker.probe_interval if availability.answers else 0.25)
            if broker.client is None:
                continue
            number = next(self._numbers)
            try:
                await broker.client.publish(
                    broker.node_channel, f"probe {broker.member_id} {number}".encode()
                )
                availability.answered()
                self._sent[number] = time.monotonic()
            except (RedisError, OSError) as exc:
                if availability.unanswered():
                    log.error("Redis does not answer (%s): publishing is unavailable", exc)

    def check(self) -> None:
        """Raise ``Reconnect`` if a probe is overdue (a stale subscription)."""
        if not self._sent:
            return
        oldest = min(self._sent.values())
        interval = self.broker.probe_interval
        if time.monotonic() - oldest > interval * 2:
            self._sent.clear()
            raise Reconnect(f"no probe came back within {interval * 2:g} s (a stale subscription)")

    def message(self, data: bytes) -> None:
        """A message on the node's channel: a probe back, or a gather to answer."""
        broker = self.broker
        kind, _, rest = data.partition(b" ")
        if kind == b"probe":
            member, _, number = rest.partition(b" ")
            if member.decode() == broker.member_id:
                self._sent.pop(int(number), None)
        elif kind == b"gather":
            key, _, query = rest.partition(b" ")
            figures = broker.member.report(orjson.loads(query))
            figures["worker"] = None
            figures["member"] = broker.member_id
            task = asyncio.get_running_loop().create_task(self._answer(key.decode(), figures))
            task.add_done_callback(ignore_result)

    async def _answer(self, key: str, figures: dict[str, Any]) -> None:
        assert self.broker.client is not None
        async with self.broker.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, orjson.dumps(figures))
            pipe.expire(key, 10)
            await pipe.execute()

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker of this node, through the node's channel; this worker
        alone when Redis is away."""
        broker = self.broker
        mine = {**broker.member.report(query), "worker": None, "member": broker.member_id}
        if broker.workers <= 1 or broker.client is None or not broker.available:
            return [mine]
        key = gather_key(broker.prefix)
        try:
            await broker.client.publish(
                broker.node_channel, b"gather %s %s" % (key.encode(), orjson.dumps(query))
            )
            figures: list[dict[str, Any]] = []
            deadline = time.monotonic() + 1.0
            while len(figures) < broker.workers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reply = await broker.client.blpop([key], timeout=max(0.01, remaining))
                if reply is None:
                    break
                figures.append(orjson.loads(reply[1]))
        except (RedisError, OSError):
            return [mine]
        if not any(f.get("member") == broker.member_id for f in figures):
            figures.append(mine)
        for number, figure in enumerate(sorted(figures, key=lambda f: f.get("pid", 0))):
            figure["worker"] = number
        return figures
