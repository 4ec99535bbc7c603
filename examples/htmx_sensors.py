"""A sensor feed swapped in by the htmx sse extension.

Readings are published to topic ``demo/sensors`` as ``reading`` events whose
data is a multi-line HTML fragment (``sse_fast.frames.htmx_fragment``: one
``data:`` line per line, joined back by the browser). The page's
``sse-swap="reading"`` with ``hx-swap="afterbegin"`` puts each one first in the
list; the page keeps the newest 50, shows the connection's state from the
extension's ``htmx:sseOpen``/``htmx:sseError`` events, and the extension
reconnects with a doubling backoff (0.5 s to 64 s) after an error.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time

from sse_fast.frames import htmx_fragment
from sse_fast.hub import Hub

from ._frames import request

TOPIC = "demo/sensors"
EVERY = 0.5
KEPT = 50
SENSORS = ("greenhouse", "cellar", "attic", "garage")


def reading(number: int, sensor: str, celsius: float, humidity: float) -> str:
    """A reading's ``<li>`` (several lines, as a template engine writes it)."""
    return (
        f'<li id="reading-{number}" class="reading">\n'
        f"  <time>{time.strftime('%H:%M:%S')}</time>\n"
        f"  <b>{sensor}</b> {celsius:.1f} °C, {humidity:.0f} % humidity\n"
        f"</li>"
    )


async def run(hub: Hub, pace: float = 1.0, seed: int | None = None) -> None:
    r = random.Random(seed)
    for number in itertools.count(1):
        await asyncio.sleep(EVERY / pace)
        sensor = SENSORS[number % len(SENSORS)]
        base = 18 + 4 * math.sin(number / 40)
        fragment = reading(number, sensor, base + r.uniform(-0.5, 0.5), r.uniform(35, 60))
        await hub.publish([request(TOPIC, htmx_fragment(fragment, event="reading"))])
