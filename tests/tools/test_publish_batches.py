"""``Publisher.publish`` calls going together (``PublishBatches``), in process: when a
request goes out and what it carries, against a fake ``POST /publish`` whose answers
the test releases one by one. The same against a real server: ``test_publisher.py``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from sse_fast._publish_batches import PublishBatches
from sse_fast.testing import wait_for


class HeldServer:
    """A ``post`` that keeps every request until the test answers it (each event's id:
    ``id-<its data>``)."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[Any], asyncio.Future[None]]] = []

    async def post(self, body: bytes, idempotent: bool) -> list[str]:
        decoded = orjson.loads(body)
        events = decoded.get("events", [decoded])
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.requests.append((events, held))
        await held
        return [f"id-{event['data']}" for event in events]

    def sizes(self) -> list[int]:
        return [len(events) for events, _ in self.requests]

    def answer(self, index: int) -> None:
        self.requests[index][1].set_result(None)


def failed(error: Exception, status: int, maybe: bool) -> Exception:
    return RuntimeError(str(error))


def call(batches: PublishBatches, n: int) -> asyncio.Future[str]:
    body = orjson.dumps({"topic": f"t/{n}", "data": n})
    return asyncio.ensure_future(batches.publish(body, (f"t/{n}",), None))


def test_requests_grow_with_the_load_and_a_second_is_in_flight() -> None:
    """Twenty calls at once on four connections: the first goes alone at once, the next
    as soon as as many wait as are in flight (1, 1, 2, 4: four requests in flight), the
    other twelve wait for an answer and then go together; every call gets its own id.
    Idle again, a lone call goes at once."""

    async def main() -> None:
        server = HeldServer()
        batches = PublishBatches(server.post, 4, 1000, 1 << 20, failed)
        calls = [call(batches, n) for n in range(20)]
        await wait_for(lambda: len(server.requests) == 4, what="four requests in flight")
        assert server.sizes() == [1, 1, 2, 4]
        assert [e["data"] for events, _ in server.requests for e in events] == list(range(8))
        # every call made (each queued or sent as it ran): nothing else goes while none
        # is answered (the decision is made as a call queues, not later)
        assert (batches.waiting, batches.in_flight) == (12, 4)
        server.answer(1)
        # 12 wait, 7 are in flight: they go together on the connection set free
        await wait_for(lambda: len(server.requests) == 5, what="the waiting calls sent")
        assert server.sizes()[4] == 12
        for index in (0, 2, 3, 4):
            server.answer(index)
        assert await asyncio.gather(*calls) == [f"id-{n}" for n in range(20)]
        assert batches.figures() == {"requests": 5, "calls": 20, "in_flight_max": 4}
        lone = call(batches, 20)
        await wait_for(lambda: len(server.requests) == 6, what="the lone call sent at once")
        assert server.sizes()[5] == 1
        server.answer(5)
        assert await lone == "id-20"
        await batches.close()

    asyncio.run(main())


def test_fewer_waiting_than_in_flight_wait_for_an_answer() -> None:
    """Two connections, a request of three calls in flight: two more calls wait (fewer
    than three), a third makes them as many and they go on the second connection."""

    async def main() -> None:
        server = HeldServer()
        batches = PublishBatches(server.post, 2, 1000, 1 << 20, failed)
        first = [call(batches, 0)]
        await wait_for(lambda: len(server.requests) == 1, what="the first call sent")
        more = [call(batches, n) for n in (1, 2, 3)]  # 1 goes (1 waits, 1 in flight)
        await wait_for(lambda: len(server.requests) == 2, what="the second request sent")
        assert server.sizes() == [1, 1]
        server.answer(0)
        await wait_for(lambda: len(server.requests) == 3, what="the two waiting sent")
        assert server.sizes() == [1, 1, 2]
        waiting = [call(batches, n) for n in (4, 5)]  # 2 wait, 3 in flight
        await wait_for(lambda: batches.waiting == 2, what="the two calls queued")
        assert batches.in_flight == 2  # they stay
        third = [call(batches, 6)]  # 3 wait, 3 in flight: but no connection is free
        await wait_for(lambda: batches.waiting == 3, what="the third call queued")
        assert batches.in_flight == 2
        assert len(server.requests) == 3
        server.answer(1)  # a connection free, 2 in flight, 3 wait: they go
        await wait_for(lambda: len(server.requests) == 4, what="the waiting calls sent")
        assert server.sizes()[3] == 3
        for index in (2, 3):
            server.answer(index)
        ids = await asyncio.gather(*first, *more, *waiting, *third)
        assert ids == [f"id-{n}" for n in range(7)]
        await batches.close()

    asyncio.run(main())


def test_a_close_cancelled_leaves_the_requests_to_answer_their_calls() -> None:
    """A time limit on the close runs out while requests are in flight: the requests go
    on and every call, another task's await, gets its id (the close's gather cancelled
    them, and those calls waited for good); a request itself cancelled (the loop closing)
    fails its calls, maybe published, rather than leave them waiting."""

    async def main() -> None:
        server = HeldServer()
        batches = PublishBatches(server.post, 2, 1000, 1 << 20, failed)
        calls = [call(batches, n) for n in range(3)]
        await wait_for(lambda: len(server.requests) == 2, what="two requests in flight")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0):  # a time limit on the close, run out while it waits
                await batches.close()
        server.answer(0)
        server.answer(1)
        await wait_for(lambda: len(server.requests) == 3, what="the third call sent")
        server.answer(2)
        assert await asyncio.gather(*calls) == ["id-0", "id-1", "id-2"]
        stopped = call(batches, 3)
        await wait_for(lambda: len(server.requests) == 4, what="a request in flight")
        for send in list(batches._sends):
            send.cancel()  # as the loop closing does
        try:
            await stopped
        except RuntimeError as exc:
            assert "stopped while this publish was in flight" in str(exc)
        else:
            raise AssertionError("a cancelled request's call got an id")
        await batches.close()

    asyncio.run(main())
