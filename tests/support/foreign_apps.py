"""SSE servers that are not ours, shaped as users write them, for testing the load tools.

Run by uvicorn (``uvicorn tests.support.foreign_apps:chat``); ``serve_foreign(...)``
starts one on a free loopback port and stops it. Two apps:

``chat`` (sse-starlette, or ``sse_fast.starlette`` with ``FOREIGN_SSE=sse_fast``)
    * ``GET /rooms/{room}/stream`` -> events ``event: message``, ``id: <n>`` (a
      per-room counter), ``retry: 1000``, data ``{"room": R, "body": <what was
      posted>, "n": <n>}``. Needs ``Authorization: Bearer user-<anything>`` (401
      otherwise). Resumes from ``Last-Event-ID`` out of the room's last 1,000 events.
      Also sends ``event: joined`` (data ``{"room": R}``) first: not a message.
    * ``POST /rooms/{room}/messages`` with JSON ``{"body": <any JSON>}`` -> 201
      ``{"n": <n>}``; 400 for anything else. No auth.
    * ``GET /healthz`` -> 200.
``ticker``
    The server publishes by itself: ``GET /ticks`` sends ``event: tick`` with data
    ``{"ts": <wall-clock ms>, "n": <n>}`` every ``FOREIGN_TICK`` seconds (0.05),
    ``n`` counting from 1 per stream; a comment ``: keepalive`` between. With
    ``?end_after=K`` each stream ends after its K-th tick (as a restart would end it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .waiting import until

if os.environ.get("FOREIGN_SSE") == "sse_fast":
    from sse_fast.starlette import EventSourceResponse, ServerSentEvent
else:
    from sse_starlette import EventSourceResponse, ServerSentEvent  # type: ignore[assignment]

__all__ = ["chat", "serve_foreign", "ticker"]

ROOT = Path(__file__).resolve().parents[2]


class _Room:
    def __init__(self) -> None:
        self.n = 0
        self.history: deque[tuple[int, str]] = deque(maxlen=1000)
        self.queues: set[asyncio.Queue[tuple[int, str]]] = set()


_rooms: dict[str, _Room] = {}


async def _stream(request: Request) -> Response:
    if not request.headers.get("authorization", "").startswith("Bearer user-"):
        return JSONResponse({"error": "Authorization: Bearer user-<id> needed"}, status_code=401)
    name = request.path_params["room"]
    room = _rooms.setdefault(name, _Room())
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    last = request.headers.get("last-event-id", "")
    backlog = [(n, d) for n, d in room.history if last.isdigit() and n > int(last)]
    room.queues.add(queue)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(data=json.dumps({"room": name}), event="joined", retry=1000)
            for n, data in backlog:
                yield ServerSentEvent(data=data, event="message", id=str(n))
            sent = backlog[-1][0] if backlog else 0
            while True:
                n, data = await queue.get()
                if n > sent:
                    yield ServerSentEvent(data=data, event="message", id=str(n))
        finally:
            room.queues.discard(queue)

    return EventSourceResponse(events(), ping=5)


async def _post(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "send JSON"}, status_code=400)
    if not isinstance(body, dict) or "body" not in body:
        return JSONResponse({"error": 'send {"body": ...}'}, status_code=400)
    name = request.path_params["room"]
    room = _rooms.setdefault(name, _Room())
    room.n += 1
    data = json.dumps({"room": name, "body": body["body"], "n": room.n})
    room.history.append((room.n, data))
    for queue in room.queues:
        queue.put_nowait((room.n, data))
    return JSONResponse({"n": room.n}, status_code=201)


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


chat = Starlette(
    routes=[
        Route("/rooms/{room}/stream", _stream),
        Route("/rooms/{room}/messages", _post, methods=["POST"]),
        Route("/healthz", _healthz),
    ]
)

TICK = float(os.environ.get("FOREIGN_TICK", "0.05"))


async def _ticks(request: Request) -> Response:
    end_after = int(request.query_params.get("end_after", "0"))

    async def events() -> AsyncIterator[Any]:
        n = 0
        next_at = time.monotonic()
        while not end_after or n < end_after:
            next_at += TICK
            # pace: the ticker's, a tick every FOREIGN_TICK seconds
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            n += 1
            yield ServerSentEvent(data=json.dumps({"ts": time.time() * 1000, "n": n}), event="tick")
            if n % 20 == 0:
                yield ServerSentEvent(comment="keepalive")

    return EventSourceResponse(events())


ticker = Starlette(routes=[Route("/ticks", _ticks), Route("/healthz", _healthz)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_foreign(app: str = "chat", drop_in: bool = False) -> Iterator[tuple[str, int]]:
    """Run ``app`` (``chat`` or ``ticker``) under uvicorn on a free loopback port; yields
    ``(base URL, uvicorn's pid)``. ``drop_in``: with ``sse_fast.starlette`` in place of
    sse-starlette. Stops it (SIGTERM, then SIGKILL) at exit."""
    port = _free_port()
    env = {**os.environ, "FOREIGN_SSE": "sse_fast" if drop_in else "sse_starlette"}
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        f"tests.support.foreign_apps:{app}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "1",
    ]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"uvicorn {app} ended at start: {err[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    try:
        until(listening, 30, f"uvicorn {app} listening on {port}")
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
