"""A Django project in one module, streaming through sse_fast.django, for the
tests under real ASGI servers (tests/adapters/test_django.py): uvicorn, hypercorn, Granian.

    /readyz           200
    /count?n=N        events 0..N-1 (id = n, event "count"), then the end
    /sync-count?n=N   the same from a sync generator (run in threads)
    /endless          an event every 50 ms until the client leaves or shutdown
    /idle             one event, then nothing but pings (ping=0.2 s)
    /flood            64 KiB events as fast as they are taken (send_timeout=1 s)
    /status           {"open": streams open, "finished": generators whose finally
                       ran, "tasks": tasks}
    /last-event-id    the Last-Event-ID header, as sse_fast.django decodes it
    /context?name=N   a context variable set by the generator, read after each yield
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
)
django.setup()
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from sse_fast import django as sse  # noqa: E402
from sse_fast.django import EventSourceResponse, ServerSentEvent, last_event_id  # noqa: E402
from tests.support.status_probe import objects  # noqa: E402

STATE = {"finished": 0}


async def readyz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def count(request: HttpRequest) -> EventSourceResponse:
    n = int(request.GET.get("n", "10"))

    async def feed() -> AsyncIterator[Any]:
        for i in range(n):
            yield ServerSentEvent(f"event {i}\nsecond line", event="count", id=str(i))

    return EventSourceResponse(feed())


async def sync_count(request: HttpRequest) -> EventSourceResponse:
    n = int(request.GET.get("n", "10"))

    def feed() -> Iterator[Any]:
        for i in range(n):
            # pace: a sync generator may block: it runs in a thread
            time.sleep(0.001)
            yield {"data": f"sync {i}", "id": str(i)}

    return EventSourceResponse(feed())


async def endless(request: HttpRequest) -> EventSourceResponse:
    async def feed() -> AsyncIterator[Any]:
        try:
            n = 0
            while True:
                yield {"data": n, "id": str(n)}
                n += 1
                await asyncio.sleep(0.05)  # pace: the app's, an event every 50 ms
        finally:
            STATE["finished"] += 1

    return EventSourceResponse(feed(), ping=1)


async def idle(request: HttpRequest) -> EventSourceResponse:
    async def feed() -> AsyncIterator[Any]:
        try:
            yield "hello"
            await asyncio.sleep(3600)
        finally:
            STATE["finished"] += 1

    return EventSourceResponse(feed(), ping=0.2, send_timeout=1, request=request)


async def flood(request: HttpRequest) -> EventSourceResponse:
    async def feed() -> AsyncIterator[Any]:
        block = "x" * 65536
        try:
            while True:
                yield block
        finally:
            STATE["finished"] += 1

    return EventSourceResponse(feed(), send_timeout=1, request=request)


REQUEST_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("request_name")


async def context(request: HttpRequest) -> EventSourceResponse:
    async def feed() -> AsyncIterator[Any]:
        token = REQUEST_NAME.set(request.GET.get("name", "?"))
        try:
            for i in range(3):
                yield {"data": f"{REQUEST_NAME.get()} {i}"}
                # pace: the generator suspends between its events (its context must hold)
                await asyncio.sleep(0.01)
        finally:
            REQUEST_NAME.reset(token)  # the same context as set(): no ValueError
            STATE["context_reset"] = STATE.get("context_reset", 0) + 1

    return EventSourceResponse(feed())


async def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "open": sse.open_streams(),
            "tasks": len(asyncio.all_tasks()),
            **objects(request.GET.get("objects") == "1"),
            **STATE,
        }
    )


async def the_last_event_id(request: HttpRequest) -> HttpResponse:
    return HttpResponse(repr(last_event_id(request)))


urlpatterns = [
    path("readyz", readyz),
    path("count", count),
    path("sync-count", sync_count),
    path("endless", endless),
    path("idle", idle),
    path("flood", flood),
    path("status", status),
    path("context", context),
    path("last-event-id", the_last_event_id),
]

application = get_asgi_application()
