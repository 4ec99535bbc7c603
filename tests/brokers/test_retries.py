"""A publish repeated with the same event ids (a retry after a timeout) is not
published twice: by the local broker, the relay (several workers) and Redis
(several nodes: the retry may land on another one). Events without ids, and
ids on other topics, are published every time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from sse_fast.brokers._sequencing import RecentIds
from sse_fast.brokers.redis import RedisBroker
from sse_fast.hub import Hub, PublishRequest
from sse_fast.settings import Settings
from sse_fast.testing import RedisServer, ServerProcess, collect, wait_for

from .test_relay import Recording


def test_recent_ids_forget_after_the_window_and_beyond_their_size() -> None:
    now = [0.0]
    recent = RecentIds(window=10, size=3, clock=lambda: now[0])
    a = PublishRequest(("t",), 1, id="a")
    assert not recent.repeated(a, 0) and recent.repeated(a, 5)
    assert not recent.repeated(PublishRequest(("u",), 1, id="a"), 5)  # other topics
    assert not recent.repeated(a, 11)  # past the window: new again
    for name in "bcd":
        recent.repeated(PublishRequest(("t",), 1, id=name), 12)
    assert len(recent) == 3 and not recent.repeated(a, 12)  # the oldest went first
    recent.expire(100)
    assert len(recent) == 0


async def _check(publish_on: list[Hub], listen: Hub) -> None:
    stream = Recording()
    await stream.attach(listen, ["t", "u"])
    batch = [
        PublishRequest(("t",), "one", id="e-1"),
        PublishRequest(("t",), "no id"),
        PublishRequest(("t", "u"), "two", id="e-2"),
    ]
    first = await publish_on[0].publish(batch)
    again = await publish_on[-1].publish(batch)  # the retry (maybe on another node)
    assert first[0] == again[0] == "e-1" and first[2] == again[2] == "e-2"
    assert again[1] != first[1]  # no id: published again
    elsewhere = await publish_on[0].publish([PublishRequest(("u",), "three", id="e-1")])
    assert elsewhere == ["e-1"]
    # no event twice: a repeat would come before an event published after them all
    (marker,) = await publish_on[-1].publish([PublishRequest(("t",), "marker")])
    await wait_for(lambda: len(stream.events()) >= 6, what="five events and the marker")
    assert [(e[1], e[2]) for e in stream.events()] == [
        ("e-1", "one"),
        (first[1], "no id"),
        ("e-2", "two"),
        (again[1], "no id"),
        ("e-1", "three"),
        (marker, "marker"),
    ]


def test_the_local_broker_publishes_a_retry_once() -> None:
    async def main() -> None:
        hub = Hub(Settings())
        await hub.start()
        try:
            await _check([hub], hub)
        finally:
            await hub.stop()

    asyncio.run(main())


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(0) as server:
        yield server


@pytest.mark.processes("a retry across real workers and a real redis-server")
def test_redis_publishes_a_retry_once_on_any_node(redis_server: RedisServer) -> None:
    async def main() -> None:
        a = Hub(Settings(), broker=RedisBroker(redis_server.url, probe_interval=0.3))
        b = Hub(Settings(), broker=RedisBroker(redis_server.url, probe_interval=0.3))
        await a.start()
        await b.start()
        try:
            await _check([a, b], b)
            # ids may hold spaces, topic names may not: these two must not collide
            stream = Recording()
            await stream.attach(b, ["a", "b"])
            first = await a.publish([PublishRequest(("a",), "one", id="b c")])
            second = await a.publish([PublishRequest(("a", "b"), "two", id="c")])
            assert (first, second) == (["b c"], ["c"])
            await wait_for(lambda: len(stream.events()) == 2, what="the two events")
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


@pytest.mark.processes("a retry across real workers and a real redis-server")
def test_several_workers_publish_a_retry_once() -> None:
    with ServerProcess("--workers", "2") as server:

        async def main() -> None:
            client = server.client("t")
            await client.connect()
            body = orjson.dumps({"events": [{"topic": "t", "data": "x", "id": "r-1"}]})
            answers = []
            for _ in range(6):  # over new connections: both workers take some
                status, _, reply = await server.publish(body)
                assert status == 200
                answers.append(orjson.loads(reply)["ids"])
            await server.publish(b'{"topic":"t","data":"after"}')
            events = await collect(client, 2)
            assert [e.data for e in events] == ["x", "after"]
            assert answers == [["r-1"]] * 6
            client.close()

        asyncio.run(main())
