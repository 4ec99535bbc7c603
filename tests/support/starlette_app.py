"""A Starlette app streaming through sse_fast.starlette, for the tests under real
servers (tests/adapters/test_starlette_servers.py): uvicorn, hypercorn, Granian.

    /readyz           200
    /count?n=N        events 0..N-1 (id = n, event "count"), then the end
    /endless          an event every 50 ms until the client leaves or shutdown
    /idle             nothing but pings (ping=0.2 s, send_timeout=1 s)
    /status           {"open": streams open, "closed": close handler calls,
                       "finished": generators whose finally ran, "tasks": tasks}
    /last-event-id    the Last-Event-ID header, as sse_fast.starlette decodes it
    /queued?n=N&gap=G events 0..N-1 put in the stream's queue G seconds apart by a
                      task of their own (the usual app), then the end
    /saturate?seconds=S  (POST) keeps the event loop busy for S seconds: 20 ms of
                      CPU at a time, back to back; (DELETE) ends that at the next slice
    /pacer            the loop's pacer: {"busy": bool, "engaged": times}

The pacer's hold is 0.5 s here (2 s by default) to keep the tests short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sse_fast import starlette as sse
from sse_fast._adapters import pacing as _pacing
from sse_fast.starlette import EventSourceResponse, ServerSentEvent, last_event_id
from tests.support.status_probe import objects

STATE = {"closed": 0, "finished": 0}
_pacing.HOLD = 0.5


async def readyz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def count(request: Request) -> EventSourceResponse:
    n = int(request.query_params.get("n", "10"))

    async def feed() -> AsyncIterator[Any]:
        for i in range(n):
            yield ServerSentEvent(f"event {i}\nsecond line", event="count", id=str(i))

    return EventSourceResponse(feed())


def _coalesce(request: Request) -> bool:
    """``?coalesce=1``: the stream coalesces its writes (and paces them while the
    loop is saturated)."""
    return request.query_params.get("coalesce") == "1"


async def on_close(message: Any) -> None:
    STATE["closed"] += 1


async def endless(request: Request) -> EventSourceResponse:
    async def feed() -> AsyncIterator[Any]:
        try:
            n = 0
            while True:
                yield {"data": n, "id": str(n)}
                n += 1
                await asyncio.sleep(0.05)  # pace: the app's, an event every 50 ms
        finally:
            STATE["finished"] += 1

    return EventSourceResponse(
        feed(), client_close_handler_callable=on_close, ping=1, coalesce=_coalesce(request)
    )


async def idle(request: Request) -> EventSourceResponse:
    async def feed() -> AsyncIterator[Any]:
        try:
            yield "hello"
            await asyncio.sleep(3600)
        finally:
            STATE["finished"] += 1

    return EventSourceResponse(
        feed(), client_close_handler_callable=on_close, ping=0.2, send_timeout=1
    )


async def status(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "open": sse.open_streams(),
            "tasks": len(asyncio.all_tasks()),
            **objects(request.query_params.get("objects") == "1"),
            **STATE,
        }
    )


async def queued(request: Request) -> EventSourceResponse:
    n = int(request.query_params["n"])
    gap = float(request.query_params["gap"])
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def produce() -> None:
        for i in range(n):
            queue.put_nowait(i)
            await asyncio.sleep(gap)  # pace: the producer's, ?gap= apart

    async def feed() -> AsyncIterator[Any]:
        producer = asyncio.get_running_loop().create_task(produce())
        try:
            for _ in range(n):
                i = await queue.get()
                yield {"data": i, "id": str(i)}
        finally:
            producer.cancel()

    return EventSourceResponse(feed(), coalesce=_coalesce(request))


#: the loop time the saturation ends at (``/saturate``)
_SATURATED = {"until": 0.0}


async def saturate(request: Request) -> PlainTextResponse:
    loop = asyncio.get_running_loop()
    if request.method == "DELETE":
        _SATURATED["until"] = 0.0
        return PlainTextResponse("ok")
    _SATURATED["until"] = loop.time() + float(request.query_params["seconds"])

    def spin() -> None:
        if loop.time() < _SATURATED["until"]:
            stop = time.perf_counter() + 0.02
            while time.perf_counter() < stop:
                pass
            loop.call_soon(spin)

    loop.call_soon(spin)
    return PlainTextResponse("ok")


async def pacer(request: Request) -> JSONResponse:
    found = _pacing.pacer(asyncio.get_running_loop())
    return JSONResponse({"busy": found.busy, "engaged": found.engaged})


async def the_last_event_id(request: Request) -> PlainTextResponse:
    return PlainTextResponse(repr(last_event_id(request)))


app = Starlette(
    routes=[
        Route("/readyz", readyz),
        Route("/count", count),
        Route("/endless", endless),
        Route("/idle", idle),
        Route("/status", status),
        Route("/last-event-id", the_last_event_id),
        Route("/queued", queued),
        Route("/saturate", saturate, methods=["POST", "DELETE"]),
        Route("/pacer", pacer),
    ]
)
