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


def test_a_topic_counts_its_streams_and_shares_empty_sets_until_used() -> None:
    """A topic counts its streams (``subscribers``, from ``Streams.join`` to the
    stream leaving, once however often it is detached); its sets for multi-topic
    and catching-up streams are one shared empty dict each until a first member
    (memory per topic), and those shared dicts are never written to."""
    import sys

    from sse_fast.hub import _presence as presence

    async def main() -> None:
        app = make_app()
        hub = app.hub
        alone = Stream(app, query=[("topic", "a")]).start()
        both = Stream(app, query=[("topic", "a"), ("topic", "b")]).start()
        other = Stream(app, query=[("topic", "c")]).start()
        await settle()
        a, b, c = (hub.topics.by_name[name] for name in "abc")
        topics = sys.modules[type(a).__module__]  # the core's (topic_ext or its twin)
        assert (a.subscribers, b.subscribers, c.subscribers) == (2, 1, 1)
        assert c.in_sync_multi is topics._NO_MULTI and c.catching_up is topics._NO_CATCHING_UP
        # one stream of this topic only: held as the lone one, no dict of its own
        assert c.lone is not None and c.in_sync is topics._NO_IN_SYNC
        assert a.lone is not None and a.in_sync is topics._NO_IN_SYNC
        assert list(a.in_sync_multi) == list(b.in_sync_multi) != []
        assert presence.figures(a)["subscribers"] == 2
        late = Stream(app, query=[("topic", "c")], eager=False).start()
        await asyncio.sleep(0)  # inside its start write (lazy): it will catch up
        assert c.subscribers == 2
        publish(app, "c", "early")
        await settle(50)
        assert late.data() == ["early"] and c.catching_up is not topics._NO_CATCHING_UP
        assert topics._NO_MULTI == {} and topics._NO_CATCHING_UP == {}
        assert topics._NO_IN_SYNC == {}
        subscription = c.lone
        assert subscription is not None
        for stream in (alone, both, other, late):
            stream.disconnect()
            await stream.finished()
        hub.detach(subscription)  # again: counted out once
        assert (a.subscribers, b.subscribers, c.subscribers) == (0, 0, 0)
        assert "a" not in hub.topics.by_name and "b" not in hub.topics.by_name

    run(main())
