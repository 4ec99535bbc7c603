"""Lifecycle: heartbeats and drain."""

from __future__ import annotations

import asyncio

import pytest

from sse_fast.hub import Hub
from sse_fast.settings import Settings
from sse_fast.testing import wait_for

from ..conftest import forgive
from ..support.asgi_harness import Stream, make_app, request, run, settle


def test_heartbeat_reaches_idle_streams(eager: bool) -> None:
    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "h")], eager=eager).start()
        await settle()
        assert app.hub.heartbeat() == 1
        await settle()
        assert bytes(stream.raw).endswith(b": \n\n")
        stream.disconnect()
        await stream.finished()

    run(main())


@pytest.mark.parametrize("fault", [RuntimeError("a bug"), asyncio.CancelledError()])
def test_a_heartbeat_that_raises_does_not_end_the_heartbeats(
    caplog: pytest.LogCaptureFixture, fault: BaseException
) -> None:
    """One heartbeat raises (a bug; a ``CancelledError`` out of another task's future):
    said with its traceback, and the next ones go out (the periodic task ended: no
    heartbeat on any stream again, no topic swept)."""

    async def main() -> None:
        hub = Hub(Settings(heartbeat_interval=0.01))
        await hub.start()
        try:
            beat = hub.lifecycle.heartbeat
            beats = 0

            def failing_once() -> int:
                nonlocal beats
                beats += 1
                if beats == 1:
                    raise fault
                return beat()

            hub.lifecycle.heartbeat = failing_once  # type: ignore[method-assign]
            await wait_for(lambda: beats >= 3, what="three heartbeats")
            assert hub._periodic is not None and not hub._periodic.done()
            said = [r for r in caplog.records if "heartbeats and topic sweeping" in r.getMessage()]
            assert len(said) == 1 and said[0].exc_info is not None
            forgive(caplog, "heartbeats and topic sweeping")
        finally:
            await hub.stop()

    run(main())


def test_drain_closes_every_stream_with_jittered_retry(eager: bool) -> None:
    async def main() -> None:
        app = make_app(retry_ms=1000, drain_retry_jitter_ms=500)
        streams = [Stream(app, query=[("topic", "d")], eager=eager).start() for _ in range(30)]
        await settle()
        await asyncio.wait_for(app.hub.drain(), 5)
        for stream in streams:
            await stream.finished()
            assert stream.ended
            assert stream.events[-1].event == "sse-fast-disconnect"
            assert 1000 <= stream.parser.retry <= 1500
        assert len({s.parser.retry for s in streams}) > 1
        assert app.hub.subscriptions == {}
        # a new stream is told to come back, in a 200 (tests/app/test_come_back.py)
        status, _, body = await request(app, "GET", "/events", query=[("topic", "d")])
        assert status == 200 and b"event: sse-fast-disconnect" in body
        assert b'"reason":"draining"' in body

    run(main())


def test_the_drain_closes_its_streams_without_a_garbage_collection() -> None:
    """Each close allocates (its handler's wake-up): collections set off meanwhile
    traversed every stream still held, 44 % of a worker's drain at 16,700 streams. None
    runs while the streams are closed; the collector's state is restored after."""
    import gc

    async def main() -> None:
        app = make_app()
        streams = [Stream(app, query=[("topic", "g")]).start() for _ in range(2000)]
        await settle()
        closing = app.hub.closer.close

        def close(*args: object, **kwargs: object) -> None:
            closing(*args, **kwargs)  # type: ignore[arg-type]
            calls.append(gc.isenabled())

        calls: list[bool] = []
        app.hub.closer.close = close  # type: ignore[method-assign]
        await asyncio.wait_for(app.hub.drain(), 10)
        assert len(calls) == 2000 and not any(calls)  # paused for each close
        assert gc.isenabled()  # and on again after
        for stream in streams:
            await stream.finished()

    run(main())


def test_what_is_told_of_the_drain_is_told_once_and_can_be_forgotten() -> None:
    """``Hub.when_draining``: each callback called as the drain starts, before any
    stream is closed; one forgotten (a request whose body came) is not called."""

    async def main() -> None:
        hub = Hub(Settings(drain_timeout=0.1))
        told: list[tuple[str, bool]] = []
        hub.when_draining(lambda: told.append(("kept", hub.draining)))
        forget = hub.when_draining(lambda: told.append(("forgotten", hub.draining)))
        forget()
        forget()  # forgetting twice is harmless
        await hub.drain()
        assert told == [("kept", False)]  # before the drain's first step

    asyncio.run(main())
