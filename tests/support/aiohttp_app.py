"""An aiohttp app streaming through sse_fast.aiohttp (and, for comparison, through
aiohttp-sse), for tests/adapters/test_aiohttp.py; run by ``python -m aiohttp.web``.

    /readyz            200
    /count?n=N         N events (ours); /count-theirs: the same calls through aiohttp-sse
    /endless           an event every 50 ms while is_connected()
    /wait              one event, then wait() until the client leaves or shutdown
    /sockopt           one event: TCP_USER_TIMEOUT of the socket (ms) with send_timeout=7
    /status            {"open", "tasks", "finished", "waited"}
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp_sse
from aiohttp import web

from sse_fast import aiohttp as sse
from tests.support.status_probe import objects

STATE = {"finished": 0, "waited": 0}


async def readyz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _count(request: web.Request, sse_response: Any) -> web.StreamResponse:
    n = int(request.query.get("n", "10"))
    async with sse_response(request) as resp:
        for i in range(n):
            await resp.send(f"event {i}\nsecond\r\nthird", id=str(i), event="count")
        await resp.send("last", retry=1500)
    return resp  # type: ignore[no-any-return]


async def count(request: web.Request) -> web.StreamResponse:
    return await _count(request, sse.sse_response)


async def count_theirs(request: web.Request) -> web.StreamResponse:
    return await _count(request, aiohttp_sse.sse_response)


async def endless(request: web.Request) -> web.StreamResponse:
    try:
        async with sse.sse_response(request, ping_interval=1) as resp:
            n = 0
            while resp.is_connected():
                try:
                    await resp.send(str(n), id=str(n))
                except ConnectionResetError:
                    break
                n += 1
                await asyncio.sleep(0.05)  # pace: the app's, an event every 50 ms
        return resp
    finally:
        STATE["finished"] += 1


async def wait(request: web.Request) -> web.StreamResponse:
    async with sse.sse_response(request) as resp:
        await resp.send("hello")
        await resp.wait()
        STATE["waited"] += 1
    return resp


async def sockopt(request: web.Request) -> web.StreamResponse:
    async with sse.sse_response(request, send_timeout=7) as resp:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) if sock else -1
        await resp.send(str(value))
    return resp


async def status(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "open": sse.open_streams(),
            "tasks": len(asyncio.all_tasks()),
            **objects(request.query.get("objects") == "1"),
            **STATE,
        }
    )


def make_app(argv: list[str] | None = None) -> web.Application:
    app = web.Application()
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/count", count)
    app.router.add_get("/count-theirs", count_theirs)
    app.router.add_get("/endless", endless)
    app.router.add_get("/wait", wait)
    app.router.add_get("/sockopt", sockopt)
    app.router.add_get("/status", status)
    return app
