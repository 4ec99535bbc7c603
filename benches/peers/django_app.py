"""Django peer for the benchmark: the pattern a Django user writes by hand, or ours.

One ``asyncio.Queue`` per subscriber in an async view, under Django's ASGI handler
(one process: the queues live in it). Endpoints match the Starlette peer's:

* ``GET /events?topic=T`` -> SSE stream of the data published to T
* ``POST /publish`` with JSON ``{"topic": T, "data": "<str>"}`` -> ``{"delivered": n}``
* ``GET /healthz`` -> ``{"status": "ok"}``

``PEER_SSE=django_plain`` (the default) streams with Django's own
``StreamingHttpResponse`` over an async generator that writes ``data: ...`` frames
and a ``: ping`` comment when ``PEER_HEARTBEAT`` seconds pass without an event (what
a hand-rolled Django SSE view does); ``PEER_SSE=sse_fast`` returns
``sse_fast.django.EventSourceResponse`` over the same generator of items
(``benches/django_adapter.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import django
from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="bench", DEBUG=False, MIDDLEWARE=[]
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

LIBRARY = os.environ.get("PEER_SSE", "django_plain")
HEARTBEAT = float(os.environ.get("PEER_HEARTBEAT", "15"))
if LIBRARY == "sse_fast":
    from sse_fast.django import EventSourceResponse

topics: dict[str, set[asyncio.Queue[str]]] = {}


async def events(request: HttpRequest) -> HttpResponse:
    topic = request.GET.get("topic")
    if not topic:
        return JsonResponse({"error": "topic is required"}, status=400)
    queue: asyncio.Queue[str] = asyncio.Queue()
    topics.setdefault(topic, set()).add(queue)

    def unregister() -> None:
        subscribers = topics.get(topic)
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del topics[topic]

    if LIBRARY == "sse_fast":

        async def items() -> AsyncIterator[Any]:
            try:
                while True:
                    yield {"data": await queue.get()}
            finally:
                unregister()

        return EventSourceResponse(items(), ping=HEARTBEAT, request=request)

    async def frames() -> AsyncIterator[bytes]:  # the hand-rolled way
        try:
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), HEARTBEAT or None)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                yield b"data: " + data.encode() + b"\n\n"
        finally:
            unregister()

    response = StreamingHttpResponse(frames(), content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


async def publish(request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body)
        topic, data = body["topic"], body["data"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "expected {topic, data}"}, status=400)
    if not isinstance(data, str):
        return JsonResponse({"error": "data must be a string"}, status=400)
    subscribers = topics.get(topic, ())
    for queue in subscribers:
        queue.put_nowait(data)
    return JsonResponse({"delivered": len(subscribers)})


async def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("events", events), path("publish", publish), path("healthz", healthz)]
application = get_asgi_application()
