"""``/status`` of the framework test apps (tests/support/starlette_app.py,
tests/support/aiohttp_app.py): open streams, tasks and counters, read until a condition
holds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Callable
from typing import Any

from sse_fast.testing import HOST, http_request, wait_for


def objects(wanted: bool) -> dict[str, int]:
    """``{"objects": n}``, the objects the garbage collector tracks after a full
    collection, when ``wanted`` (a request's ``?objects=1``: it takes a while)."""
    if not wanted:
        return {}
    gc.collect()
    return {"objects": len(gc.get_objects())}


#: the most the objects a test app holds may grow from the first round of 1,000
#: vanished clients to the next: a leak of what a stream holds is thousands (~17
#: objects a stream, found this way under Granian). The counts after rounds 1, 2
#: and 3 were flat (within 150) under the seven apps and servers, so two rounds
#: show what three did. Memory is no test: the allocator settled over several
#: rounds (+7, +3, +2 MB, then flat; measured).
OBJECTS_GROWTH = 500


async def read_status(port: int, objects: bool = False) -> dict[str, Any]:
    path = "/status?objects=1" if objects else "/status"
    _, _, body = await http_request(HOST, port, "GET", path, timeout=5)
    return dict(json.loads(body))


async def status_when(
    port: int, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The first status for which ``check`` holds, or the last one read by ``timeout``
    (the caller's assertions say what is wrong with it)."""
    read: list[dict[str, Any]] = []

    async def holds() -> bool:
        read[:] = [await read_status(port)]
        return check(read[0])

    with contextlib.suppress(TimeoutError):
        await wait_for(holds, timeout=timeout, interval=0.05, what="the status asked for")
    return read[0]


async def seconds_to_notice_leaving(port: int, path: str, counter: str, clients: int = 20) -> float:
    """Open ``clients`` streams at ``path``, let them leave (half FIN, half RST) and
    return the seconds until the app's ``counter`` in ``/status`` grew by as many."""
    from sse_fast.testing import SSEClient, collect

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


async def vanish_rounds(
    port: int, paths: list[str], grown: dict[str, int], rounds: int = 2
) -> None:
    """``rounds`` times: a client per path opens its stream and reads an event, all
    are open at once, then half leave with FIN and half vanish with RST (as a
    crashed client). After each round no stream is open, each ``/status``
    counter in ``grown`` grew by its figure, and the tasks are back to where they
    were; over the rounds the objects grow by less than ``OBJECTS_GROWTH``."""
    from sse_fast.testing import SSEClient, collect

    counts = []
    for _ in range(rounds):
        baseline = await read_status(port)
        clients = [SSEClient(HOST, port, [], path=path) for path in paths]
        for start in range(0, len(clients), 100):
            await asyncio.gather(*(c.connect() for c in clients[start : start + 100]))
        await asyncio.gather(*(collect(c, 1, timeout=20) for c in clients))
        status = await status_when(port, lambda s: s["open"] >= len(paths))
        assert status["open"] == len(paths)
        for client in clients[::2]:
            client.close()
        for client in clients[1::2]:
            client.abort()

        def settled(now: dict[str, Any], baseline: dict[str, Any] = baseline) -> bool:
            grew = all(now[name] - baseline[name] == n for name, n in grown.items())
            return now["open"] == 0 and grew

        status = await status_when(port, settled, timeout=20)
        assert status["open"] == 0, status
        for name, n in grown.items():
            assert status[name] - baseline[name] == n, (name, status, baseline)
        # tasks: back to the baseline (the /status request's own, give or take)
        tasks = baseline["tasks"] + 2
        status = await status_when(port, lambda s, tasks=tasks: s["tasks"] <= tasks)
        assert status["tasks"] <= tasks
        counts.append((await read_status(port, objects=True))["objects"])
    assert counts[-1] - counts[0] < OBJECTS_GROWTH, counts
