"""A Redis connection's probes against a real ``redis-server``: a probe that comes back on
the subscription before its ``PUBLISH`` answers (seen under uvloop with three shards) is
counted back, and probes published while the subscription was away are not held against
the next one, so a sound subscription is not taken for stale and replaced. Real processes: a
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

from ..conftest import forgive

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


def test_probes_lost_while_the_subscription_is_away_do_not_make_the_next_one_stale(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """As in a failover (the new primary answers publishes before the subscription to it is
    made): the subscription killed (``CLIENT KILL TYPE pubsub``) and made again only once
    five probes were published meanwhile, more than twice the interval. Those never come
    back; the new subscription is not taken for stale on their account (it was, and replaced
    again: on a loaded machine, each replacement a new gap for a probe to fall in)."""

    async def main() -> None:
        broker = RedisBroker(redis_server.url, probe_interval=0.1)
        hub = Hub(Settings(), broker=broker)
        await hub.start()
        try:
            connection = broker.feed.connections[0]
            assert connection.client is not None
            publish = connection.client.publish
            away = live = 0  # probes published while the subscription is away, and live

            async def counting(channel: str, message: bytes) -> Any:
                nonlocal away, live
                if message.startswith(b"probe "):
                    if connection.live:
                        live += 1
                    else:
                        away += 1
                return await publish(channel, message)

            connection.client.publish = counting  # type: ignore[method-assign,assignment]
            subscribe_all = connection._subscribe_all
            gate = asyncio.Event()

            async def when_let() -> None:  # the next subscription, once the test says
                await gate.wait()
                await subscribe_all()

            connection._subscribe_all = when_let  # type: ignore[method-assign]
            reconnects = connection.reconnects
            await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            await wait_for(lambda: away >= 5, timeout=10, what="5 probes while away")
            gate.set()
            await wait_for(lambda: connection.live, timeout=10, what="subscribed again")
            seen = live
            # ten more probes on the new subscription: past twice the interval of any
            # probe sent while it was away
            await wait_for(lambda: live >= seen + 10, timeout=10, what="10 probes while live")
            assert connection.reconnects == reconnects + 1 and broker.available
            lost = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            assert len(lost) == 1 and "Connection closed" in lost[0], lost  # the kill's alone
            forgive(caplog, "Connection closed")
        finally:
            await hub.stop()

    asyncio.run(main())
