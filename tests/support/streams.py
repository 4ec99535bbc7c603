"""How many streams a real server holds: a wait until a test's clients are attached.

A client that has connected (or only been made) is not yet a stream of the hub: an
event published before its stream is attached is not its (a new stream starts after
what was published before it). ``/stats`` counts the hub's streams, every worker's.
"""

from __future__ import annotations

import orjson

from sse_fast.testing import ServerProcess, wait_for

__all__ = ["opened"]


async def opened(server: ServerProcess, count: int = 1, timeout: float = 15) -> None:
    """Wait until ``server`` holds ``count`` streams (``/stats``; with several workers,
    an answer that leaves a worker out counts less, never more)."""

    async def held() -> bool:
        status, _, body = await server.get("/stats")
        return status == 200 and orjson.loads(body)["connections"] >= count

    await wait_for(held, timeout=timeout, what=f"{count} streams opened")
