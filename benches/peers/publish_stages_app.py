"""One ``POST /publish`` cut into stages, for ``benches/publish_stages.py``.

The same request as the single-publish benchmark, answered after doing only the
first stages of what ``sse-fast serve`` does with it, so that the difference
between two stages' requests/s (in the same run) is what that stage costs under
Granian, not in a tight loop. ``PUBLISH_STAGE``:

* ``read``: read the body (stopping at its length, as sse_fast does), answer 200;
* ``parse``: + decode and check it (``parse_publish_body``), answer with ``send_json``;
* ``sequence``: + give it a position, an id and its frame (``sequence_once``);
* ``apply``: + store it in its topic's ring (``FanOut.apply``, flushed later);
* ``hub``: ``Hub.publish`` whole: the above, the data directory's write, the flush;
* ``full``: the app itself (``App``: routing, content type, credential, rate,
  body deadline, then ``hub``).

``rsgi``: Granian's RSGI interface (``--interface rsgi``): with ``read`` the
body is read and answered; with ``hub`` it is parsed and published through the
same hub, answered with the ids. Settings come from ``SSE_FAST_*`` as for
``serve`` (the runner sets anonymous publishing, no rate limit, a data directory
of its own, which is the durable store as under ``serve``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from sse_fast._publish_checks import parse_publish_body
from sse_fast.app import App
from sse_fast.app._http import send_json
from sse_fast.brokers._sequencing import sequence_once
from sse_fast.brokers.local import LocalBroker
from sse_fast.settings import Settings
from sse_fast.settings._handoff import Handoff

STAGES = ("read", "parse", "sequence", "apply", "hub", "full")
STAGE = os.environ.get("PUBLISH_STAGE", "full")
if STAGE not in STAGES:
    raise SystemExit(f"PUBLISH_STAGE must be one of {', '.join(STAGES)}, not {STAGE!r}")
ANSWER = b'{"ids":["1"]}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"13")],
}


def _edge() -> App:
    """The app as a ``sse-fast serve`` worker makes it: the data directory (given,
    unlocked: this app is alone on it) is the durable store, persistence on."""
    settings = Settings.from_env()
    handoff = Handoff()
    if settings.persistence != "off" and not settings.redis_url:
        path = Path(settings.data_dir)
        path.mkdir(parents=True, exist_ok=True)
        handoff = Handoff(store_dir=str(path))  # as serve hands its workers
    return App(settings, handoff=handoff)


edge = _edge()
hub = edge.hub
assert edge.settings.persistence == "off" or (
    isinstance(hub.broker, LocalBroker) and hub.broker.store is not None
)


def _broker() -> LocalBroker:
    broker = hub.broker
    assert isinstance(broker, LocalBroker), "one worker: the local broker"
    return broker


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app: ``/publish`` up to ``PUBLISH_STAGE``, everything else the edge's."""
    if scope["type"] != "http" or scope["path"] != "/publish" or STAGE == "full":
        await edge(scope, receive, send)
        return
    body = (await receive())["body"]  # the benchmark's bodies come in one message
    if STAGE == "read":
        await send(START)
        await send({"type": "http.response.body", "body": ANSWER})
        return
    requests = parse_publish_body(body, edge.settings)
    ids = ["1"]
    if STAGE == "hub":
        ids = await hub.publish(requests, checked=True)
    elif STAGE != "parse":
        broker = _broker()
        items, ids = sequence_once(requests, broker.next_position, hub.clock(), broker.recent)
        broker.next_position += len(items)
        if STAGE == "apply":
            hub.apply(items)
    await send_json(send, 200, {"ids": ids})


class Rsgi:
    """The RSGI app: ``read`` or ``hub`` (``/healthz`` answers 200)."""

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(edge.lifespan.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(edge.lifespan.shutdown())

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.path != "/publish":
            protocol.response_bytes(200, [("content-type", "text/plain")], b"ok")
            return
        body = await protocol()
        if STAGE == "read":
            protocol.response_bytes(200, [("content-type", "application/json")], ANSWER)
            return
        requests = parse_publish_body(body, edge.settings)
        ids = await hub.publish(requests, checked=True)
        payload = orjson.dumps({"ids": ids})
        protocol.response_bytes(200, [("content-type", "application/json")], payload)


rsgi = Rsgi()
