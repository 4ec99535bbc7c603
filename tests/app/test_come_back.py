"""A stream asked for while the server drains is told when to come back, in a 200 of
one ``sse-fast-disconnect`` frame, not refused with a 503 that would end a browser's
``EventSource`` for good (``App.come_back_later``). The same while starting, in
process: ``tests/app/test_start.py``; with Chromium: ``tests/e2e/test_start.py``."""

from __future__ import annotations

import asyncio
import json

from sse_fast._core import Parser
from sse_fast.app import App
from sse_fast.settings import Settings
from tests.support.asgi_harness import request


def test_a_stream_asked_for_while_draining_is_told_to_come_back() -> None:
    settings = Settings(
        allow_anonymous_publish=True,
        install_signal_handlers=False,
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
