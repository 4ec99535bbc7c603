"""The server adapter: which ``send`` results are finished writes, and the
disconnect watch that needs no task per stream."""

from __future__ import annotations

import asyncio
from typing import Any

from sse_fast._asgi import SendStyle
from sse_fast.hub._disconnect_watch import DisconnectWatch
from sse_fast.hub._subscription import NO_PEER, Subscription

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


def _subscription(loop: asyncio.AbstractEventLoop) -> Subscription:
    return Subscription(1, None, (), NO_PEER, 0.0, loop.create_future())  # type: ignore[arg-type]


def test_the_watch_rearms_until_the_client_leaves() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        gone: list[Any] = []
        subscription = _subscription(loop)
        DisconnectWatch(gone.append).arm(subscription, inbox.get)  # type: ignore[arg-type]
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

        subscription = _subscription(loop)
        DisconnectWatch(gone.append).arm(subscription, broken)  # type: ignore[arg-type]
        for _ in range(5):
            await asyncio.sleep(0)
        assert gone == [subscription]

    asyncio.run(main())


def test_a_watched_stream_holds_nothing_of_its_own_on_the_receive() -> None:
    """What waits on a stream's ``receive()`` is the subscription itself, in the
    watch's one shared context: no bound method, watch object or context copy
    per stream (memory per idle stream, benches/results/stream_memory.md)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        watch = DisconnectWatch(lambda s: None)
        waiters: list[asyncio.Future[dict[str, Any]]] = []

        def receive() -> asyncio.Future[dict[str, Any]]:
            waiters.append(loop.create_future())
            return waiters[-1]

        streams = [_subscription(loop) for _ in range(3)]
        for stream in streams:
            watch.arm(stream, receive)  # type: ignore[arg-type]
        for stream, waiter in zip(streams, waiters, strict=True):
            ((callback, context),) = waiter._callbacks  # type: ignore[attr-defined]
            assert callback is stream and context is watch.context
        waiters[0].set_result({"type": "http.request", "body": b""})  # re-armed, same way
        await asyncio.sleep(0)
        ((callback, context),) = waiters[3]._callbacks  # type: ignore[attr-defined]
        assert callback is streams[0] and context is watch.context

    asyncio.run(main())


def test_client_and_connection_are_read_from_the_scope_when_asked() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        scope = {
            "type": "http",
            "http_version": "1.1",
            "client": ("::ffff:10.0.0.7", 51000),
            "server": ("127.0.0.1", 8000),
        }
        stream = Subscription(1, None, (), scope, 0.0, loop.create_future())  # type: ignore[arg-type]
        assert stream.client == "::ffff:10.0.0.7:51000"
        assert stream.connection == (("127.0.0.1", 8000), ("10.0.0.7", 51000))
        stream.peer = {**scope, "http_version": "2"}  # not one connection per stream
        assert stream.connection is None
        stream.peer = {"type": "http"}  # no addresses (a Unix socket)
        assert (stream.client, stream.connection) == ("?", None)
        stream.peer = ("1.2.3.4:5", None)  # given as such (Hub.attach(client=...))
        assert (stream.client, stream.connection) == ("1.2.3.4:5", None)

    asyncio.run(main())
