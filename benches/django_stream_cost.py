"""CPU per event of a Django stream, in process: sse_fast.django against the view a
Django user writes by hand (the same queue per subscriber as ``benches/peers/django_app.py``).

    python -m benches.django_stream_cost

1,000 streams, each reading its own ``asyncio.Queue``; 20 rounds of one event to every
queue; Django's ``StreamingHttpResponse`` iteration consumes each stream (what its ASGI
handler does, without a server or sockets). Prints the process's CPU microseconds per
event for each, twice, alternating (this machine is noisy: compare within the run).

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Does ``sse_fast.django``'s stream cost more CPU per event than the view a
    Django user writes by hand?
Result: it did (19-20.5 us against 11.5-16.2 us) while it waited with ``asyncio.wait``
    and a ping timer per item; waiting on one future, 8.5-11.6 us.
Date: 2026-11-25 (docs/benchmarks.md, the Django adapter)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import django
from django.conf import settings

settings.configure(ALLOWED_HOSTS=["*"], SECRET_KEY="bench")
django.setup()

from django.http import StreamingHttpResponse  # noqa: E402

from sse_fast.django import EventSourceResponse  # noqa: E402

STREAMS, ROUNDS = 1000, 20


def _hand_rolled(queue: asyncio.Queue[str]) -> Any:
    async def frames() -> AsyncIterator[bytes]:
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                yield b": ping\n\n"
                continue
            yield b"data: " + data.encode() + b"\n\n"

    return StreamingHttpResponse(frames(), content_type="text/event-stream")


def _ours(queue: asyncio.Queue[str]) -> Any:
    async def items() -> AsyncIterator[dict[str, str]]:
        while True:
            yield {"data": await queue.get()}

    return EventSourceResponse(items(), ping=15)


async def cost(make: Any) -> float:
    queues: list[asyncio.Queue[str]] = [asyncio.Queue() for _ in range(STREAMS)]
    got = 0

    async def consume(response: Any) -> None:
        nonlocal got
        async for _ in response.streaming_content:
            got += 1

    tasks = [asyncio.create_task(consume(make(q))) for q in queues]
    await asyncio.sleep(0.2)
    cpu = time.process_time()
    for n in range(ROUNDS):
        for queue in queues:
            queue.put_nowait("hello world")
        while got < (n + 1) * STREAMS:
            await asyncio.sleep(0)
    cpu = time.process_time() - cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return cpu / (ROUNDS * STREAMS) * 1e6


def main() -> int:
    for _ in range(2):
        for name, make in (
            ("hand-rolled StreamingHttpResponse", _hand_rolled),
            ("sse_fast.django", _ours),
        ):
            print(f"{name:34s} {asyncio.run(cost(make)):5.1f} us of CPU per event", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
