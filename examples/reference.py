"""The reference: a plain ``EventSource`` on the edge, nothing in between.

A ``tick`` event (``{"n": ..., "at": ...}``) is published to topic
``demo/ticks`` every second. The page lists every event the browser hands it:
its type, ``lastEventId`` and data, with the stream's state. The edge's first
frame sets ``retry`` (3 s by default) and gives the stream's position as an id;
after a lost connection the browser reconnects with ``Last-Event-ID`` and the
edge resumes after it, or says with an ``sse-fast-missed`` event that it could
not (a restarted server without Redis keeps no history).
"""

from __future__ import annotations

import asyncio
import itertools
import time

from sse_fast.hub import Hub
from sse_fast.publishing import PublishRequest

TOPIC = "demo/ticks"
EVERY = 1.0


async def run(hub: Hub, pace: float = 1.0) -> None:
    for n in itertools.count(1):
        await asyncio.sleep(EVERY / pace)
        tick = {"n": n, "at": time.strftime("%H:%M:%S")}
        await hub.publish([PublishRequest((TOPIC,), tick, event="tick")])
