"""A node reads its subscription in bulk (``brokers/redis/_buffered.py``): what one
socket read holds is handed over without redis-py's per-message path, every message
in order, and anything else still goes through redis-py's own handling. Real
processes: a real redis-server (what hiredis's buffer holds is what Redis wrote)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis
from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import ResponseError

from sse_fast.brokers.redis import RedisBroker, publish
from sse_fast.brokers.redis._buffered import buffered_reader, settle, take
from sse_fast.hub import Hub
from sse_fast.settings import Settings
from sse_fast.testing import RedisServer, wait_for

from ..conftest import forgive
from .test_relay import Recording

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")

pytestmark = pytest.mark.processes("a real redis-server: what a socket read of it holds")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(0) as server:
        yield server


async def _subscribed(url: str, *channels: str, **options: Any) -> tuple[Any, Any]:
    client = aioredis.Redis.from_url(url, **options)
    pubsub = client.pubsub()
    await pubsub.subscribe(*channels)
    for _ in channels:  # the confirmations, through redis-py
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
    return client, pubsub


async def _first(pubsub: Any) -> dict[str, Any]:
    """The next message through redis-py (its read fills hiredis's buffer)."""
    message = await pubsub.get_message(timeout=5)
    assert message is not None
    return message


@pytest.mark.parametrize("protocol", [2, 3])
def test_what_one_read_brought_is_taken_in_order_without_awaiting(
    redis_server: RedisServer, protocol: int
) -> None:
    async def main() -> None:
        client, pubsub = await _subscribed(redis_server.url, "a", "b", protocol=protocol)
        publisher = aioredis.Redis.from_url(redis_server.url)
        try:
            reader = buffered_reader(pubsub)
            assert reader is not None, "the installed redis-py hides hiredis's reader elsewhere"
            async with publisher.pipeline(transaction=False) as pipe:
                for n in range(500):
                    pipe.publish("a" if n % 3 else "b", str(n))
                await pipe.execute()
            first = await _first(pubsub)
            got = [(first["channel"], first["data"])]
            reads = 1
            while len(got) < 500:
                assert take(reader, lambda channel, data: got.append((channel, data))) is None
                if len(got) < 500:  # the rest comes with the next read
                    got.append(((m := await _first(pubsub))["channel"], m["data"]))
                    reads += 1
            assert reads < 250  # most came with another's read
            assert got == [(b"a" if n % 3 else b"b", str(n).encode()) for n in range(500)]
            assert take(reader, got.append) is None  # nothing whole is left
        finally:
            await pubsub.aclose()
            await client.aclose()
            await publisher.aclose()

    asyncio.run(main())


def test_a_reply_of_another_kind_stops_the_take_and_half_a_message_waits() -> None:
    reader = hiredis.Reader(notEnoughData=NOT_ENOUGH_DATA)

    def push(*items: bytes) -> bytes:
        return b">%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)

    reader.feed(push(b"message", b"a", b"1") + push(b"smessage", b"b", b"2"))
    reader.feed(b"*3\r\n$11\r\nunsubscribe\r\n$4\r\ngone\r\n:1\r\n")  # RESP2's shape
    reader.feed(push(b"message", b"a", b"3") + push(b"message", b"a", b"4")[:-3])
    got: list[tuple[bytes, bytes]] = []
    other = take(reader, lambda channel, data: got.append((channel, data)))
    assert got == [(b"a", b"1"), (b"b", b"2")]
    assert other == [b"unsubscribe", b"gone", 1]
    assert take(reader, lambda channel, data: got.append((channel, data))) is None
    assert got[2:] == [(b"a", b"3")]  # the half-read one waits for the rest
    reader.feed(b"4\r\n")
    assert take(reader, lambda channel, data: got.append((channel, data))) is None
    assert got[3:] == [(b"a", b"4")]


@pytest.mark.parametrize("protocol", [2, 3])
def test_settle_makes_of_a_confirmation_what_get_message_would(
    redis_server: RedisServer, protocol: int
) -> None:
    async def main() -> None:
        client, pubsub = await _subscribed(redis_server.url, "a", "gone", protocol=protocol)
        try:
            await pubsub.unsubscribe("gone")
            assert b"gone" in pubsub.pending_unsubscribe_channels
            reply: list[Any] = [b"unsubscribe", b"gone", 1]
            if protocol == 3:
                reply = hiredis.PushNotification(reply)
            assert await settle(pubsub, reply) == {
                "type": "unsubscribe",
                "pattern": None,
                "channel": b"gone",
                "data": 1,
            }
            assert b"gone" not in pubsub.channels  # redis-py's bookkeeping was done
            assert b"gone" not in pubsub.pending_unsubscribe_channels
            assert await settle(pubsub, []) is None  # (what get_message skips)
        finally:
            await pubsub.aclose()
            await client.aclose()

    asyncio.run(main())


def test_settle_skips_what_get_message_skips(redis_server: RedisServer) -> None:
    """A health check's answer, and a RESP3 push of redis-py's own (a maintenance
    notice: its handlers take it), give None, as ``get_message`` does."""

    async def main() -> None:
        client, pubsub = await _subscribed(
            redis_server.url, "a", protocol=3, health_check_interval=30
        )
        try:
            for answer in pubsub.health_check_response:
                assert await settle(pubsub, answer) is None
            moving = hiredis.PushNotification([b"MOVING", 1, 15, b"127.0.0.1:1"])
            assert await settle(pubsub, moving) is None
            assert await settle(pubsub, []) is None
        finally:
            await pubsub.aclose()
            await client.aclose()

    asyncio.run(main())


def test_no_buffer_is_taken_from_a_disconnected_connection_or_past_a_push_handler(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        client, pubsub = await _subscribed(redis_server.url, "a")
        handled = aioredis.Redis.from_url(redis_server.url, protocol=3)
        own = handled.pubsub(push_handler_func=lambda message: None)
        try:
            assert buffered_reader(pubsub) is not None
            assert buffered_reader(own) is None  # every message must reach its handler
            await pubsub.connection.disconnect()
            assert buffered_reader(pubsub) is None  # what is left there is not to be read
        finally:
            await own.aclose()
            await handled.aclose()
            await pubsub.aclose()
            await client.aclose()

    asyncio.run(main())


def test_a_message_no_script_wrote_is_ignored_said_and_the_reading_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-made ``PUBLISH`` on a topic's channel (not an event: no position, no
    id) used to end the node's reading for good; it is skipped with a warning naming the
    topic, and the events before and after it are delivered."""

    async def main() -> None:
        hub = Hub(Settings(), broker=RedisBroker(redis_server.url, probe_interval=0.3))
        await hub.start()
        client = aioredis.Redis.from_url(redis_server.url)
        stream = Recording()
        try:
            await stream.attach(hub, ["news"])
            channel = hub.broker.feed.first.placement.channel("news")  # type: ignore[attr-defined]
            first = await publish(client, "news", "before")
            async with client.pipeline(transaction=False) as pipe:
                pipe.publish(channel, b"hello")  # not an event
                pipe.publish(channel, b"1 2 \xff\ndata: x\n\n")  # nor this (its id)
                pipe.publish(channel, b"one 2 x\ndata: x\n\n")  # nor this (its position)
                await pipe.execute()
            last = await publish(client, "news", "after")
            await wait_for(lambda: len(stream.events()) == 2)
            assert stream.events() == [(None, first, "before"), (None, last, "after")]
            assert hub.broker.feed.first.malformed == 3  # type: ignore[attr-defined]
            # a flood of them is said at every thousandth, not each time
            async with client.pipeline(transaction=False) as pipe:
                for n in range(1998):
                    pipe.publish(channel, b"junk %d" % n)
                await pipe.execute()
            final = await publish(client, "news", "final")
            await wait_for(lambda: len(stream.events()) == 3)
            assert stream.events()[-1] == (None, final, "final")
            assert hub.broker.feed.first.malformed == 2001  # type: ignore[attr-defined]
        finally:
            await client.aclose()
            await hub.stop()

    asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if "not an sse_fast event" in r.getMessage()]
    assert len(said) == 3, said  # the first, the 1,000th, the 2,000th
    assert "'news'" in said[0] and "b'hello'" in said[0] and "(1 so far" in said[0]
    assert "(1000 so far" in said[1] and "(2000 so far" in said[2]


def test_an_error_reply_is_raised_by_settle() -> None:
    async def main() -> None:
        with pytest.raises(ResponseError, match="wrong"):
            await settle(object(), ResponseError("wrong"))
        with pytest.raises(ConnectionError, match="lost"):
            await settle(object(), [ConnectionError("lost")])

    asyncio.run(main())


@pytest.mark.parametrize("parser", [_AsyncRESP2Parser, _AsyncRESP3Parser])
def test_without_hiredis_there_is_no_buffer_to_take_from(
    redis_server: RedisServer, parser: Any
) -> None:
    async def main() -> None:
        protocol = 3 if parser is _AsyncRESP3Parser else 2
        client, pubsub = await _subscribed(
            redis_server.url, "a", parser_class=parser, protocol=protocol
        )
        try:
            assert buffered_reader(pubsub) is None
            assert buffered_reader(object()) is None  # no connection at all
        finally:
            await pubsub.aclose()
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_node_hands_a_burst_over_in_few_deliveries_every_event_in_order(
    redis_server: RedisServer, protocol: int
) -> None:
    """The read loop's bulk path is the one taken (fewer deliveries than events), and
    nothing of its order or completeness changes: each topic's events once, in order,
    with the ids ``publish`` answered; over RESP2 and RESP3 (the node's URL says which)."""

    async def main() -> None:
        url = f"{redis_server.url}?protocol={protocol}"
        hub = Hub(Settings(), broker=RedisBroker(url, probe_interval=0.3))
        await hub.start()
        client = aioredis.Redis.from_url(redis_server.url)
        deliveries: list[int] = []
        membership = hub.broker.feed.first.topics.membership  # type: ignore[attr-defined]
        deliver = membership.deliver

        def counted(items: Any) -> None:
            deliveries.append(len(items))
            deliver(items)

        membership.deliver = counted
        assert hub.broker.feed.first.client.connection_pool.connection_kwargs["protocol"] == (  # type: ignore[attr-defined]
            protocol
        )
        streams = {name: Recording() for name in ("t0", "t1", "t2", "t3")}
        try:
            for name, stream in streams.items():
                await stream.attach(hub, [name])
            ids = await asyncio.gather(
                *(publish(client, f"t{n % 4}", {"n": n}) for n in range(800))
            )
            await wait_for(lambda: sum(len(s.events()) for s in streams.values()) == 800)
            for k, (name, stream) in enumerate(streams.items()):
                expected = [(None, ids[n], f'{{"n":{n}}}') for n in range(k, 800, 4)]
                assert stream.events() == expected, name
            assert sum(deliveries) == 800
            assert len(deliveries) < 400, deliveries  # most reads carried many
        finally:
            membership.deliver = deliver
            await client.aclose()
            await hub.stop()

    asyncio.run(main())


def test_a_reply_hiredis_cannot_parse_mid_read_loses_nothing_of_what_came_before(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply hiredis cannot parse in the middle of a read (redis-py's Reader raises
    ``InvalidResponse``): the events taken before it are delivered at once, before the
    node reconnects (not held until a delivery after the resync), and the node goes on
    (the error is one redis-py raises, which a reconnect repairs): every event of every
    topic once, in order."""
    from redis.exceptions import InvalidResponse

    from sse_fast.brokers.redis import _connection

    real_take = _connection.take
    failed: list[int] = []

    class Breaking:
        """The Reader, which fails once, after a few messages of a read."""

        def __init__(self, reader: Any) -> None:
            self.reader, self.given = reader, 0

        def gets(self) -> Any:
            if not failed and self.given == 5:
                failed.append(1)
                raise InvalidResponse("Protocol error, got 'x' as reply type byte")
            self.given += 1
            return self.reader.gets()

    def take_then_break(reader: Any, message: Any) -> Any:
        return real_take(Breaking(reader), message)

    monkeypatch.setattr(_connection, "take", take_then_break)

    async def main() -> None:
        hub = Hub(Settings(), broker=RedisBroker(redis_server.url, probe_interval=0.3))
        await hub.start()
        client = aioredis.Redis.from_url(redis_server.url)
        streams = {name: Recording() for name in ("u0", "u1", "u2", "u3")}
        connection = hub.broker.feed.first  # type: ignore[attr-defined]
        membership = connection.topics.membership
        deliver = membership.deliver
        after_error: list[tuple[int, int]] = []  # (reconnects then, events)

        def watched(items: Any) -> None:
            if failed:
                after_error.append((connection.reconnects, len(items)))
            deliver(items)

        membership.deliver = watched
        try:
            for name, stream in streams.items():
                await stream.attach(hub, [name])
            ids = await asyncio.gather(
                *(publish(client, f"u{n % 4}", {"n": n}) for n in range(400))
            )
            await wait_for(lambda: sum(len(s.events()) for s in streams.values()) >= 400)
            assert failed, "no read carried more than five messages: nothing was broken"
            # the five taken before the error, delivered before the reconnect
            assert after_error[0] == (0, 5), after_error
            for k, (name, stream) in enumerate(streams.items()):
                expected = [(None, ids[n], f'{{"n":{n}}}') for n in range(k, 400, 4)]
                assert stream.events() == expected, name
        finally:
            membership.deliver = deliver
            await client.aclose()
            await hub.stop()

    asyncio.run(main())
    lost = [r for r in caplog.records if "subscription lost" in r.getMessage()]
    assert lost and "Protocol error" in lost[0].getMessage()
    forgive(caplog, "subscription lost")
