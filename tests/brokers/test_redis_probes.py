"""A Redis connection's probes against a real ``redis-server``: a probe that comes back on
the subscription before its ``PUBLISH`` answers (seen under uvloop with three shards) is
counted back, so the subscription is not taken for stale and replaced. Real processes: a
redis-server, stopped and started as it happens in production."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from sse_fast.brokers.redis import RedisBroker
from sse_fast.hub import Hub
from sse_fast.settings import Settings
from sse_fast.testing import RedisServer, wait_for

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")


pytestmark = pytest.mark.processes("a real redis-server that stops answering")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_probe_back_before_its_publish_answers_is_not_overdue(
    redis_server: RedisServer, partitions: int
) -> None:
    """Every probe comes back before PUBLISH answers (its message handed to the probes
    first, then published elsewhere): over ten probes, more than twice 2 x the interval,
    the subscription is never replaced and nothing is logged."""

    async def main() -> None:
        broker = RedisBroker(redis_server.url, partitions=partitions, probe_interval=0.1)
        hub = Hub(Settings(), broker=broker)
        await hub.start()
        try:
            connection = broker.feed.connections[0]
            assert connection.client is not None
            publish = connection.client.publish
            sent = 0

            async def back_first(channel: str, message: bytes) -> Any:
                nonlocal sent
                if message.startswith(b"probe "):
                    sent += 1
                    connection.probes.message(message)  # the subscription read it first
                    channel = "elsewhere"  # and it does not come back again
                return await publish(channel, message)

            connection.client.publish = back_first  # type: ignore[method-assign,assignment]
            reconnects = connection.reconnects
            await wait_for(lambda: sent >= 10, timeout=10, what="10 events sent")
            assert connection.reconnects == reconnects and broker.available
        finally:
            await hub.stop()

    asyncio.run(main())
