"""``Hub.attach``: one call from the response start to the fan-out, under a
Granian-like eager ``send`` and a uvicorn-like lazy one."""

from __future__ import annotations

import asyncio

from .asgi_harness import Stream, make_app, publish, run, settle


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
