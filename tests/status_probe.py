"""``/status`` of the framework test apps (tests/starlette_app.py,
tests/aiohttp_app.py): open streams, tasks and counters, read until a condition
holds."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections.abc import Callable
from typing import Any

from sse_fast._http11 import http_request
from sse_fast.testing import HOST


def rss_kb() -> int:
    """This process's resident memory in KiB (for the apps' ``/status``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def objects(request: Any) -> dict[str, int]:
    """``{"objects": n}``, the objects the garbage collector tracks after a full
    collection, when the request asks for them (``?objects=1``: it takes a while)."""
    query = getattr(request, "query_params", None) or getattr(request, "query", None)
    if query is None:
        query = getattr(request, "GET", {})
    if query.get("objects") != "1":
        return {}
    gc.collect()
    return {"objects": len(gc.get_objects())}


#: the most the objects a test app holds may grow from the first round of 1,000
#: vanished clients to the third: a leak of what a stream holds is thousands
#: (~17 objects a stream, found this way under Granian). Memory (``rss_kb``) is
#: no test: the allocator settles over several rounds (+7, +3, +2 MB, then flat).
OBJECTS_GROWTH = 500


async def read_status(port: int, objects: bool = False) -> dict[str, Any]:
    path = "/status?objects=1" if objects else "/status"
    _, _, body = await http_request(HOST, port, "GET", path, timeout=5)
    return dict(json.loads(body))


async def status_when(
    port: int, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The first status for which ``check`` holds, or the last one read by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        now = await read_status(port)
        if check(now) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.05)


async def seconds_to_notice_leaving(port: int, path: str, counter: str, clients: int = 20) -> float:
    """Open ``clients`` streams at ``path``, let them leave (half FIN, half RST) and
    return the seconds until the app's ``counter`` in ``/status`` grew by as many."""
    from sse_fast._http11 import SSEClient
    from sse_fast.testing import collect

    baseline = (await read_status(port))[counter]
    streams = [SSEClient(HOST, port, [], path=path) for _ in range(clients)]
    await asyncio.gather(*(s.connect() for s in streams))
    await asyncio.gather(*(collect(s, 1, timeout=10) for s in streams))
    left = time.monotonic()
    for stream in streams[: clients // 2]:
        stream.close()
    for stream in streams[clients // 2 :]:
        stream.abort()
    now = await status_when(port, lambda s: s[counter] - baseline == clients)
    assert now[counter] - baseline == clients, now
    return time.monotonic() - left
