"""How much of a fan-out is our Python loop, and how much is the server's send()?

Times ``FanOut.flush`` for N in-sync subscribers whose ``send`` is a do-nothing
callable returning one pre-built "already finished" object (what Granian's
eager send returns), so the figure is the cost of our loop alone: per
subscriber and per flush. Compare it with the ~1-9 us a real Granian
``send()`` costs per call (``benches/results/server.md`` and the reference
notes) to see what a Cython loop could save at most.

    python -m benches.fanout_loop_overhead [--subscribers 10000] [--rounds 200]

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Would a Cython fan-out loop pay: how much of a fan-out is our Python loop?
Result: 61-67 ns per subscriber against about 1-9 us per Granian ``send()``: at most ~5
    % of the Python side; the hub's loop stays in Python.
Date: 2026-11-22 (benches/results/fanout_loop_overhead.md)
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benches.eager import eager_send
from sse_fast.hub import Hub, PublishRequest
from sse_fast.settings import Settings


async def measure(subscribers: int, rounds: int) -> dict[str, float]:
    hub = Hub(Settings())
    loop = asyncio.get_running_loop()
    for _ in range(subscribers):  # streams whose client reads at once and never leaves
        await hub.attach(["t"], None, eager_send, loop.create_future)
    assert len(hub.topics.by_name["t"].in_sync_members()) == subscribers
    request = [PublishRequest(("t",), "x" * 40)]
    timings = []
    for _ in range(rounds):
        hub.publish_nowait(request)
        start = time.perf_counter()
        hub.fanout.flush()
        timings.append(time.perf_counter() - start)
    timings.sort()
    best = timings[0]
    median = timings[len(timings) // 2]
    return {
        "subscribers": subscribers,
        "best_ms": best * 1e3,
        "median_ms": median * 1e3,
        "best_ns_per_subscriber": best / subscribers * 1e9,
        "median_ns_per_subscriber": median / subscribers * 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(measure(args.subscribers, args.rounds))
    print(
        " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
