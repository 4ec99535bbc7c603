"""A Redis connection's probes against a real ``redis-server``: a probe that comes back on
the subscription before its ``PUBLISH`` answers (seen under uvloop with three shards) is
counted back, and probes published while the subscription was away are not held against
the next one, so a sound subscription is not taken for stale and replaced. Real processes: a
redis-server, stopped and started as it happens in production."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from sse_fast.brokers.redis import RedisBroker
from sse_fast.brokers.redis._connection import Connection
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


@contextlib.asynccontextmanager
async def watching_probes(
    url: str, see: Callable[[Connection, bytes], str | None], **options: Any
) -> AsyncIterator[tuple[RedisBroker, Connection]]:
    """A started broker of the Redis at ``url`` (a hub on it) whose first connection hands each
    probe it publishes to ``see`` first (which may name another channel to publish it on)."""
    broker = RedisBroker(url, **options)
    hub = Hub(Settings(), broker=broker)
    await hub.start()
    try:
        connection = broker.feed.connections[0]
        assert connection.client is not None
        publish = connection.client.publish

        async def seen(channel: str, message: bytes) -> Any:
            if message.startswith(b"probe "):
                channel = see(connection, message) or channel
            return await publish(channel, message)

        connection.client.publish = seen  # type: ignore[method-assign,assignment]
        yield broker, connection
    finally:
        await hub.stop()


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_probe_back_before_its_publish_answers_is_not_overdue(
    redis_server: RedisServer, partitions: int
) -> None:
    """Every probe comes back before PUBLISH answers (its message handed to the probes
    first, then published elsewhere): over ten probes, more than twice 2 x the interval,
    the subscription is never replaced and nothing is logged."""

    async def main() -> None:
        sent = 0

        def back_first(connection: Connection, message: bytes) -> str:
            nonlocal sent
            sent += 1
            connection.probes.message(message)  # the subscription read it first
            return "elsewhere"  # and it does not come back again

        url = redis_server.url
        options = {"partitions": partitions, "probe_interval": 0.1}
        async with watching_probes(url, back_first, **options) as (broker, connection):
            reconnects = connection.reconnects
            await wait_for(lambda: sent >= 10, timeout=10, what="10 events sent")
            assert connection.reconnects == reconnects and broker.available

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
        away = live = 0  # probes published while the subscription is away, and live

        def counting(connection: Connection, message: bytes) -> None:
            nonlocal away, live
            if connection.live:
                live += 1
            else:
                away += 1

        url = redis_server.url
        async with watching_probes(url, counting, probe_interval=0.1) as (broker, connection):
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

    asyncio.run(main())


@pytest.mark.parametrize(
    "fault",
    [AttributeError("'NoneType' object has no attribute 'writelines'"), asyncio.CancelledError()],
)
def test_a_probe_that_fails_otherwise_than_by_redis_does_not_end_probing(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, fault: BaseException
) -> None:
    """A probe's publish raises what no Redis fault raises (``AttributeError``, as redis-py
    gives for a connection closed under a send; a ``CancelledError`` out of another task's
    future): logged with its traceback, and the next probes go out and come back (the
    probing task ended: no stale subscription would have been found again)."""

    async def main() -> None:
        sent = 0

        def failing_once(connection: Connection, message: bytes) -> None:
            nonlocal sent
            sent += 1
            if sent == 1:
                raise fault

        url = redis_server.url
        async with watching_probes(url, failing_once, probe_interval=0.1) as (broker, connection):
            await wait_for(lambda: sent >= 5, timeout=10, what="5 probes sent")
            assert connection.probes.task is not None and not connection.probes.task.done()
            assert connection.reconnects == 0 and broker.available
            failed = [r for r in caplog.records if "probing failed" in r.getMessage()]
            assert len(failed) == 1 and failed[0].exc_info is not None
            forgive(caplog, "probing failed")

    asyncio.run(main())
