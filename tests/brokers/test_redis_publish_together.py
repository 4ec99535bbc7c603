"""``sse_fast.brokers.redis.publish`` calls going together, in process: a fake client
whose script calls the test fails on purpose (a script Redis refuses, a connection
lost). Against a real Redis: ``test_redis.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from sse_fast.brokers.redis import publish
from sse_fast.hub import PublishError
from sse_fast.testing import wait_for


class FakeRedis:
    """Answers the layout read with none and each script call with an id per event, or
    fails it as ``fail(count)`` says (``count``: the events it carries)."""

    def __init__(self, fail: Any = None) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.reads = 0
        #: layout reads to fail, from the next
        self.read_fails = 0
        #: set: layout reads wait for it
        self.held: asyncio.Event | None = None
        #: each script call's events' data lines (``data: ...``)
        self.sizes: list[int] = []

    async def get(self, key: str) -> None:
        self.reads += 1
        await asyncio.sleep(0)  # pace: one turn of the loop stands for Redis's answer
        if self.held is not None:  # until the test lets the read answer
            await self.held.wait()
        if self.read_fails:
            self.read_fails -= 1
            raise RedisConnectionError("Connection closed by server.")
        return None

    async def eval(self, script: str, keys: int, *args: Any) -> list[bytes]:
        count = int(args[keys + 4])
        self.calls.append(count)
        self.sizes.append(sum(len(a) for a in args if isinstance(a, bytes | str)))
        number = len(self.calls)
        await asyncio.sleep(0)  # pace: one turn of the loop stands for Redis's answer
        if self.fail is not None:
            self.fail(count)
        return [f"{number}-{n}".encode() for n in range(count)]


def test_a_script_redis_refuses_is_called_again_one_call_at_a_time() -> None:
    """Redis refuses a script of several events (it checks them all before it writes any):
    each call is sent again alone and gets its own answer; here a lone call passes."""

    def refuse_several(count: int) -> None:
        if count > 1:
            raise ResponseError("sse_fast: refused for the test")

    async def main() -> None:
        client = FakeRedis(refuse_several)
        ids = await asyncio.gather(*(publish(client, f"t/{n}", n) for n in range(6)))
        assert len(set(ids)) == 6
        assert max(client.calls) > 1  # some went together, and were refused
        assert client.calls.count(1) >= 6  # then each alone

    asyncio.run(main())


def test_a_refusal_of_every_call_reaches_each_caller() -> None:
    """Redis refuses every script (a read-only replica): each call raises ``PublishError``
    with Redis's reason, as it would alone."""

    def refuse(count: int) -> None:
        raise ResponseError("READONLY You can't write against a read only replica.")

    async def main() -> None:
        client = FakeRedis(refuse)
        answers = await asyncio.gather(
            *(publish(client, f"t/{n}", n) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(a, PublishError) and "READONLY" in str(a) for a in answers)

    asyncio.run(main())


def test_a_lost_connection_fails_the_calls_it_carried_with_its_error() -> None:
    """The connection is lost under a script of several calls: each of them raises the
    client's error, as a call alone would (it may or may not have been published)."""

    def lose(count: int) -> None:
        raise RedisConnectionError("Connection closed by server.")

    async def main() -> None:
        client = FakeRedis(lose)
        answers = await asyncio.gather(
            *(publish(client, f"t/{n}", n) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(a, RedisConnectionError) for a in answers), answers
        assert sum(client.calls) == 5  # each call sent once, none again

    asyncio.run(main())


def test_a_bad_event_fails_before_it_goes_with_the_others() -> None:
    """An event that cannot be encoded is refused at its call; the others are published."""

    async def main() -> None:
        client = FakeRedis()
        good = [publish(client, f"t/{n}", n) for n in range(3)]
        answers = await asyncio.gather(
            *good, publish(client, "t/x", 1, event="a\nb"), return_exceptions=True
        )
        assert [isinstance(a, str) for a in answers] == [True, True, True, False]
        with pytest.raises(PublishError):
            raise answers[3]  # type: ignore[misc]
        assert sum(client.calls) == 3

    asyncio.run(main())


def test_calls_made_together_read_the_layout_once() -> None:
    """256 calls at once, no layout recorded yet: one read of it for all of them (one
    each would open as many connections), every call published; a later call reads
    again (a fleet that records one later is followed)."""

    async def main() -> None:
        client = FakeRedis()
        ids = await asyncio.gather(*(publish(client, f"t/{n}", n) for n in range(256)))
        assert len(set(ids)) == 256 and client.reads == 1
        await publish(client, "t/0", "later")
        assert client.reads == 2

    asyncio.run(main())


def test_a_failed_layout_read_fails_the_calls_sharing_it_and_the_next_reads_again() -> None:
    """The one read the calls share loses its connection: each of them raises the
    client's error, nothing is published; the next call reads again and publishes."""

    async def main() -> None:
        client = FakeRedis()
        client.read_fails = 1
        answers = await asyncio.gather(
            *(publish(client, f"t/{n}", n) for n in range(8)), return_exceptions=True
        )
        assert all(isinstance(a, RedisConnectionError) for a in answers), answers
        assert client.reads == 1 and client.calls == []
        assert await publish(client, "t/0", "again")
        assert client.reads == 2 and client.calls == [1]

    asyncio.run(main())


def test_a_caller_cancelled_during_the_shared_read_leaves_it_to_the_others() -> None:
    """One of the calls sharing the layout read is cancelled while it is in flight: the
    read goes on, the others are published, the cancelled one is not."""

    async def main() -> None:
        client = FakeRedis()
        client.held = asyncio.Event()
        calls = [asyncio.ensure_future(publish(client, f"t/{n}", n)) for n in range(4)]
        await wait_for(lambda: client.reads == 1, what="the shared read under way")
        calls[1].cancel()
        await wait_for(calls[1].done, what="the cancellation delivered")
        client.held.set()
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(answers[1], asyncio.CancelledError)
        assert all(isinstance(answers[n], str) for n in (0, 2, 3))
        assert sum(client.calls) == 3

    asyncio.run(main())


def test_large_events_go_in_script_calls_of_a_bounded_size() -> None:
    """Twenty events of 1 MiB at once: no script call carries much more than 4 MiB (a
    thousand in one would pass Redis's query buffer limit and fail them all), and an
    event larger than that bound goes alone."""
    from sse_fast.brokers.redis._direct import BYTES_PER_CALL

    async def main() -> None:
        client = FakeRedis()
        big = "x" * (1 << 20)
        ids = await asyncio.gather(*(publish(client, f"t/{n}", big) for n in range(20)))
        assert len(set(ids)) == 20 and sum(client.calls) == 20
        assert max(client.sizes) <= BYTES_PER_CALL + (1 << 20)
        assert max(client.calls) > 1  # they still went together, a few at a time
        huge = "y" * (BYTES_PER_CALL + 1)
        await asyncio.gather(publish(client, "t/a", huge), publish(client, "t/b", huge))
        assert client.calls[-2:] == [1, 1]

    asyncio.run(main())
