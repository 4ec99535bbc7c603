"""The server adapter: which ``send`` results are finished writes, and the
disconnect watch that needs no task per stream."""

from __future__ import annotations

import asyncio
from typing import Any

from sse_fast.asgi import SendStyle
from sse_fast.hub.server import DisconnectWatch

from ..support.asgi_harness import PyEmptyAwaitable


def test_only_granians_finished_awaitable_counts_as_written() -> None:
    style = SendStyle()
    assert not style.eager and not style.written(PyEmptyAwaitable())  # not seen yet

    async def coroutine() -> None:
        return None

    pending = coroutine()
    style.observe(pending)  # a lazy server's start: nothing learnt
    assert not style.eager
    pending.close()
    style.observe(PyEmptyAwaitable())
    assert style.eager and style.written(PyEmptyAwaitable())
    assert not style.written(asyncio.Future)  # anything else is awaited


class _Subscription:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed: asyncio.Future[str] = loop.create_future()


def test_the_watch_rearms_until_the_client_leaves() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone: list[Any] = []
        subscription = _Subscription(loop)
        DisconnectWatch(subscription, inbox.get, gone.append).arm()  # type: ignore[arg-type]
        inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        for _ in range(5):
            await asyncio.sleep(0)
        assert gone == []  # another message: still watching
        inbox.put_nowait({"type": "http.disconnect"})
        for _ in range(5):
            await asyncio.sleep(0)
        assert gone == [subscription]

    asyncio.run(main())


def test_a_failing_receive_counts_as_gone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gone: list[Any] = []

        async def broken() -> dict[str, Any]:
            raise ConnectionResetError

        subscription = _Subscription(loop)
        DisconnectWatch(subscription, broken, gone.append).arm()  # type: ignore[arg-type]
        for _ in range(5):
            await asyncio.sleep(0)
        assert gone == [subscription]

    asyncio.run(main())
