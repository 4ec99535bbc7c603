"""``Hub.attach``: one call from the response start to the fan-out, under a
Granian-like eager ``send`` and a uvicorn-like lazy one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sse_fast.hub import Hub
from sse_fast.settings import Settings

from ..support.asgi_harness import Stream, make_app, publish, run, settle


def test_stream_headers_and_first_frame(eager: bool) -> None:
    async def main() -> None:
        app = make_app(retry_ms=1234)
        stream = Stream(app, query=[("topic", "a")], eager=eager).start()
        await settle()
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-store"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "connection" not in stream.headers
        assert stream.parser.retry == 1234
        assert stream.parser.last_event_id == str(app.hub.last_position)
        stream.disconnect()
        await stream.finished()

    run(main())


def test_publishes_during_a_lazy_start_are_not_lost() -> None:
    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "p")], eager=False)
        stream.start()
        await asyncio.sleep(0)  # the handler is inside its start write
        publish(app, "p", "early")
        await settle(50)
        assert stream.data() == ["early"]
        stream.disconnect()
        await stream.finished()

    run(main())


def test_a_start_that_fails_leaves_nothing_attached() -> None:
    async def main() -> None:
        hub = Hub(Settings())

        def send(message: Any) -> Any:
            raise ConnectionResetError("the client left before the response started")

        with pytest.raises(ConnectionResetError):
            await hub.attach(["a"], None, send, asyncio.get_running_loop().create_future)
        assert hub.subscriptions == {} and "a" not in hub.topics.by_name

    run(main())


def test_a_lazy_start_cancelled_leaves_nothing_attached() -> None:
    async def main() -> None:
        hub = Hub(Settings())
        started = asyncio.Event()

        async def never_written() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(
            hub.attach(
                ["a"], None, lambda m: never_written(), asyncio.get_running_loop().create_future
            )
        )
        await started.wait()
        assert len(hub.subscriptions) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hub.subscriptions == {} and "a" not in hub.topics.by_name

    run(main())
