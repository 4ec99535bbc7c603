"""A plain Starlette SSE app, as users write one (``StreamingResponse``, no
sse_fast): the upstream of the mirror-mode tests (tests/app/test_mirror_mode.py).

    /readyz                  200
    /ticks?count=N&every=S&wait=W
                             events ``tick`` with ids and data 1..N, one every S
                             seconds, from ``Last-Event-ID`` + 1 on (a resume; a
                             fresh stream first waits W seconds), then a comment
                             every second until the client leaves
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route


async def readyz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def ticks(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("count", "100"))
    every = float(request.query_params.get("every", "0.02"))
    last = request.headers.get("last-event-id", "")
    start = int(last) + 1 if last.isdigit() else 1
    wait = float(request.query_params.get("wait", "0")) if start == 1 else 0.0

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 200\n\n"
        await asyncio.sleep(wait)  # pace: ?wait=, a fresh stream's first event comes late
        for n in range(start, count + 1):
            yield f"event: tick\nid: {n}\ndata: {n}\n\n".encode()
            await asyncio.sleep(every)  # pace: ?every=, the ticks' pace
        while True:
            yield b": still here\n\n"
            await asyncio.sleep(1)  # pace: a comment a second while the client stays

    return StreamingResponse(stream(), media_type="text/event-stream")


app = Starlette(routes=[Route("/readyz", readyz), Route("/ticks", ticks)])
