"""Velithon peer for the benchmark: ``SSEResponse`` under Granian (RSGI).

One ``asyncio.Queue`` per subscriber, as in the sse-starlette peer. Endpoints
match sse_fast's:

* ``GET /events?topic=T`` -> SSE stream of the data published to T
* ``POST /publish`` with JSON ``{"topic": T, "data": "<str>"}`` -> ``{"delivered": n}``
* ``GET /healthz`` -> ``{"status": "ok"}``

Velithon's ``SSEResponse`` writes a str item as ``data: <item>\\n\\n`` without
splitting lines (multi-line data corrupts the stream) and only notices a gone
client when a later write fails. ``PEER_HEARTBEAT`` = its ``ping_interval``
(seconds, 0 = off).

No ``from __future__ import annotations`` here: Velithon resolves handler
parameters from their annotations at run time and fails on string annotations.
"""

import asyncio
import os

from velithon import JSONResponse, Request, SSEResponse, Velithon

HEARTBEAT = float(os.environ.get("PEER_HEARTBEAT", "15"))

topics: dict[str, set[asyncio.Queue]] = {}  # type: ignore[type-arg]


def _sse_response_class() -> type[SSEResponse]:
    """Velithon's ``SSEResponse`` itself, unless it cannot be constructed.

    Velithon 0.6.x (seen up to 0.6.10): ``SSEResponse.__init__`` calls
    ``init_headers()``, which reads ``self.body``, an attribute only the base
    ``Response.__init__`` sets: every SSE request ends in ``AttributeError`` and a
    500. The one-line shim gives the class an empty ``body``, which makes
    ``header_init`` emit no ``content-length`` (what a stream needs); the streaming
    code is Velithon's, unchanged.
    """

    async def empty():  # type: ignore[no-untyped-def]
        yield ""

    try:
        SSEResponse(empty())
    except AttributeError:

        class PatchedSSEResponse(SSEResponse):
            body = b""

        return PatchedSSEResponse
    return SSEResponse


SSE_RESPONSE = _sse_response_class()
SSE_RESPONSE_PATCHED = SSE_RESPONSE is not SSEResponse

app = Velithon()
# Velithon's LoggingMiddleware is always in the stack and logs every request at
# INFO (like an access log); the other servers run without access logs.
app.update_log_config(log_level="WARNING")


@app.get("/events")
async def events(request: Request):  # type: ignore[no-untyped-def]
    topic = request.query_params.get("topic")
    if not topic:
        return JSONResponse({"error": "topic is required"}, status_code=400)
    queue: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
    topics.setdefault(topic, set()).add(queue)

    async def stream():  # type: ignore[no-untyped-def]
        try:
            while True:
                yield await queue.get()
        finally:
            subscribers = topics.get(topic)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del topics[topic]

    return SSE_RESPONSE(stream(), ping_interval=HEARTBEAT if HEARTBEAT > 0 else None)


@app.post("/publish")
async def publish(request: Request):  # type: ignore[no-untyped-def]
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


@app.get("/healthz")
async def healthz(request: Request):  # type: ignore[no-untyped-def]
    return JSONResponse({"status": "ok"})
