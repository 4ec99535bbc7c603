"""A stream asked for while the server drains is told when to come back, in a 200 of
one ``sse-fast-disconnect`` frame, not refused with a 503 that would end a browser's
``EventSource`` for good (``App.come_back_later``). The same while starting, in
process: ``tests/app/test_start.py``; with Chromium: ``tests/e2e/test_start.py``."""

from __future__ import annotations

import asyncio
import json

from sse_fast._core import Parser
from sse_fast.app import App
from sse_fast.publishing import PublishError
from sse_fast.settings import Settings
from tests.support.asgi_harness import request


def test_a_stream_asked_for_while_draining_is_told_to_come_back() -> None:
    settings = Settings(
        allow_anonymous_publish=True,
        retry_ms=1000,
        drain_retry_jitter_ms=500,
    )
    app = App(settings)

    async def main() -> None:
        await app.lifespan.startup()
        await app.lifespan.drain()  # no stream open: over at once, and draining stays
        retries = set()
        for _ in range(20):
            status, headers, raw = await request(
                app, "GET", "/events", query=[("topic", "t")], headers={"last-event-id": "x"}
            )
            assert status == 200
            assert headers["content-type"].startswith("text/event-stream")
            assert "sse-fast-resume" not in headers  # nothing resumed, nor refused
            parser = Parser()
            (event,) = parser.feed(raw)
            assert event.event == "sse-fast-disconnect" and not event.id
            assert json.loads(event.data) == {
                "reason": "draining",
                "message": "this server is shutting down; reconnect after the retry, "
                "here or at another server",
            }
            assert parser.retry is not None and 1000 <= parser.retry <= 1500
            retries.add(parser.retry)
        assert len(retries) > 1  # jittered: the clients come back spread out
        assert app.hub.metrics.refused_total["draining"] == 20
        await app.lifespan.shutdown()

    asyncio.run(main())


def test_a_stream_the_broker_cannot_take_now_is_told_to_come_back() -> None:
    """Redis or the relay refusing the subscription (a shard down, a slot moving): a 503
    would end a browser's EventSource; the stream is told to come back after at least
    the broker's Retry-After, with its words, and counted as ``broker_unavailable``."""
    settings = Settings(
        allow_anonymous_publish=True,
        retry_ms=500,
        drain_retry_jitter_ms=100,
    )
    app = App(settings)

    async def refuse(*args: object, **kwargs: object) -> None:
        raise PublishError("shard 3 of 3 (redis://x) is down; retry later", 503, retry_after=2)

    async def main() -> None:
        await app.lifespan.startup()
        app.hub.attach = refuse  # type: ignore[method-assign]
        status, headers, raw = await request(app, "GET", "/events", query=[("topic", "t")])
        assert status == 200 and headers["sse-fast-come-back"] == "broker-unavailable"
        parser = Parser()
        (event,) = parser.feed(raw)
        assert event.event == "sse-fast-disconnect"
        assert json.loads(event.data) == {
            "reason": "broker-unavailable",
            "message": "shard 3 of 3 (redis://x) is down; retry later",
        }
        assert parser.retry is not None and 2000 <= parser.retry <= 2100  # Retry-After 2
        assert app.hub.metrics.refused_total["broker_unavailable"] == 1
        assert app.admission.streams_by_ip == {}  # its slot given back
        await app.lifespan.shutdown()

    asyncio.run(main())
