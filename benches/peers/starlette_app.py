"""sse-starlette peer for the benchmark: the common Python pattern.

One ``asyncio.Queue`` per subscriber, ``EventSourceResponse`` from sse-starlette,
Starlette routing, run by uvicorn (uvloop + httptools, one worker: the queues live
in one process). Endpoints match sse_fast's:

* ``GET /events?topic=T`` -> SSE stream of the data published to T
* ``POST /publish`` with JSON ``{"topic": T, "data": "<str>"}`` -> ``{"delivered": n}``
* ``GET /healthz`` -> ``{"status": "ok"}``

Configuration (set by ``benches/peers.py``): ``PEER_HEARTBEAT`` = ping interval in
seconds (0 = off). ``PEER_SSE=sse_fast`` runs the same app on ``sse_fast.starlette``
(the drop-in: only the import changes; ``benches/starlette_adapter.py``);
``PEER_SSE=sse_fast_coalesce`` adds our options (``coalesce=True``,
``ping_when_idle=True``).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LIBRARY = os.environ.get("PEER_SSE", "sse_starlette")
OPTIONS: dict[str, bool] = {}
if LIBRARY in ("sse_fast", "sse_fast_coalesce"):
    from sse_fast.starlette import EventSourceResponse, ServerSentEvent

    if LIBRARY == "sse_fast_coalesce":
        OPTIONS = {"coalesce": True, "ping_when_idle": True}
else:
    from sse_starlette import EventSourceResponse, ServerSentEvent  # type: ignore[assignment]

HEARTBEAT = float(os.environ.get("PEER_HEARTBEAT", "15"))

topics: dict[str, set[asyncio.Queue[str]]] = {}


async def events(request: Request) -> Response:
    topic = request.query_params.get("topic")
    if not topic:
        return JSONResponse({"error": "topic is required"}, status_code=400)
    queue: asyncio.Queue[str] = asyncio.Queue()
    # Registered before the response starts: a publish after the client has seen
    # the headers reaches it.
    topics.setdefault(topic, set()).add(queue)

    async def stream():  # type: ignore[no-untyped-def]
        try:
            while True:
                data = await queue.get()
                yield ServerSentEvent(data=data)
        finally:
            subscribers = topics.get(topic)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del topics[topic]

    return EventSourceResponse(stream(), ping=HEARTBEAT if HEARTBEAT > 0 else None, **OPTIONS)


async def publish(request: Request) -> Response:
    try:
        body = await request.json()
        topic = body["topic"]
        data = body["data"]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected {topic, data}"}, status_code=400)
    if not isinstance(data, str):
        return JSONResponse({"error": "data must be a string"}, status_code=400)
    subscribers = topics.get(topic, ())
    for queue in subscribers:
        queue.put_nowait(data)
    return JSONResponse({"delivered": len(subscribers)})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/events", events, methods=["GET"]),
        Route("/publish", publish, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
