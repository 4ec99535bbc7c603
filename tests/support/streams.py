"""How many streams a real server holds: a wait until a test's clients are attached.

A client that has connected (or only been made) is not yet a stream of the hub: an
event published before its stream is attached is not its (a new stream starts after
what was published before it). ``/stats`` counts the hub's streams, every worker's.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from sse_fast.testing import ServerProcess

__all__ = ["opened"]


async def opened(server: ServerProcess, count: int = 1, timeout: float = 15) -> None:
    """Wait until ``server`` holds ``count`` streams (``/stats``; with several workers,
    an answer that leaves a worker out counts less, never more)."""
    deadline = time.monotonic() + timeout
    held = 0
    while True:
        status, _, body = await server.get("/stats")
        if status == 200:
            held = orjson.loads(body)["connections"]
            if held >= count:
                return
        assert time.monotonic() < deadline, f"{held} of {count} streams opened in {timeout} s"
        await asyncio.sleep(0.02)
