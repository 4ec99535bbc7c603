"""A live dashboard of the edge itself.

Once a second the figures of the hub this server runs (``Hub.stats()`` and its
metrics: what ``/sse/stats`` and ``/sse/metrics`` report) are published to
topic ``demo/edge`` as Datastar signals (connections, topics, events published
and delivered per second) and a ``datastar-patch-elements`` event that
replaces the table of topics. The dashboard's own stream counts among the
connections it shows. Anyone who may subscribe to ``demo/edge`` sees the topic
names: a deployment whose ``/stats`` is behind the operations credential
would make this topic private too (``--private-topics demo/edge``: subscribing
then needs a JWT that covers it; see Security in the README).
"""

from __future__ import annotations

import asyncio
import html
import time

from sse_fast.frames import datastar_patch_elements, datastar_patch_signals
from sse_fast.hub import Hub

from ._frames import request

TOPIC = "demo/edge"
EVERY = 1.0


def topics_table(topics: dict[str, dict[str, int]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{t['subscribers']}</td>"
        f"<td>{t['published']}</td><td>{t['retained']}</td></tr>"
        for name, t in sorted(topics.items())
    )
    return f'<tbody id="topics">{rows}</tbody>'


async def run(hub: Hub, pace: float = 1.0) -> None:
    started = time.monotonic()
    before = (started, hub.metrics.published_total, hub.metrics.delivered_total)
    while True:
        await asyncio.sleep(EVERY / pace)
        now = time.monotonic()
        published, delivered = hub.metrics.published_total, hub.metrics.delivered_total
        elapsed = now - before[0]
        stats = hub.stats(limit=100)
        signals = {
            "connections": stats["connections"],
            "topics": stats["topics_total"],
            "published": round((published - before[1]) / elapsed, 1),
            "delivered": round((delivered - before[2]) / elapsed, 1),
            "uptime": int(now - started),
        }
        before = (now, published, delivered)
        await hub.publish(
            [
                request(TOPIC, datastar_patch_signals(signals)),
                request(TOPIC, datastar_patch_elements(topics_table(stats["topics"]))),
            ]
        )
