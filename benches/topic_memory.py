"""Memory per topic in the hub, measured with tracemalloc (Python allocations).

    python -m benches.topic_memory [--out benches/results/topic_memory.md]

Rows: a topic someone subscribes to but nobody published to (what a
subscriber can create), and topics holding 1, 10, 100 and 1,024 events of
about 60 bytes (the ring's slots grow with what it holds). Each figure is the
average over 2,000 topics, beyond what subscribing to existing topics costs.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: What does a topic cost in the hub's memory?
Result: 657 bytes for a topic subscribed to with no history, 2.1 KB with one event, ~310
    KB with 1,024 events of 60 B (the ring's slots grow with what it holds).
Date: 2026-11-22 (benches/results/topic_memory.md)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import tracemalloc
from typing import Any

import sse_fast
from sse_fast.hub import Hub, PublishRequest
from sse_fast.settings import Settings

TOPICS = 2000


class PyEmptyAwaitable:  # what Granian's eager send returns: the write is done
    def __await__(self) -> Any:
        return
        yield


def _send(message: Any) -> PyEmptyAwaitable:
    return PyEmptyAwaitable()


async def _measure(action: Any) -> float:
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    await action()
    gc.collect()
    return (tracemalloc.get_traced_memory()[0] - start) / TOPICS


async def measure() -> list[tuple[str, float]]:
    rows = []
    hub = Hub(Settings())
    never = asyncio.get_running_loop().create_future  # a client that never leaves
    existing = [f"existing-{i}" for i in range(TOPICS)]
    keep: list[Any] = [await hub.attach(existing, None, _send, never)]

    async def subscribe(names: list[str]) -> None:
        for name in names:
            keep.append(await hub.attach([name], None, _send, never))

    tracemalloc.start()
    try:
        baseline = await _measure(lambda: subscribe(existing))
        fresh = await _measure(lambda: subscribe([f"new-{i}" for i in range(TOPICS)]))
        rows.append(("subscribed, no history (what a subscriber can create)", fresh - baseline))
        for events in (1, 10, 100, 1024):
            prefix = f"h{events}-"

            async def publish(prefix: str = prefix, events: int = events) -> None:
                for n in range(events):
                    hub.publish_nowait(
                        [
                            PublishRequest((f"{prefix}{i}",), {"n": n, "text": "x" * 30})
                            for i in range(TOPICS)
                        ]
                    )

            rows.append((f"{events} event(s) of ~60 B retained", await _measure(publish)))
    finally:
        tracemalloc.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the Markdown table here too")
    args = parser.parse_args()
    rows = asyncio.run(measure())
    lines = [
        "# Memory per topic",
        "",
        f"`python -m benches.topic_memory`; Python {platform.python_version()}, "
        f"{platform.machine()}, core: {'Cython' if sse_fast.HAS_EXTENSIONS else 'pure Python'}; "
        f"default ring limits (1,024 frames, 4 MiB). tracemalloc, average of {TOPICS:,} topics.",
        "",
        "| topic | bytes per topic |",
        "|---|---:|",
        *(f"| {name} | {value:,.0f} |" for name, value in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
