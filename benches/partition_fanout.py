"""Does one partition's fan-out stay as fast with the cursors of issue 42 in the hub?

Times ``FanOut.flush`` (publish with ``publish_nowait``, then flush) for in-sync
streams whose ``send`` is a do-nothing callable returning an "already finished"
object (what Granian's eager send returns): the hub's own cost per flush.
Scenarios: ``single`` (streams of one topic: the core's ``TopicTable.flush``),
``multi`` (streams of two topics of one partition: the hub's merge), and, where
the code has partitions, ``cursor`` (streams of two topics of two partitions of a
fake two-partition broker: the merge plus the cursor rewrite).

    python -m benches.partition_fanout [--subscribers 2000] [--rounds 300]

Run it against two checkouts (``PYTHONPATH=<tree>``), alternating, to compare
before and after: the issue gates the one-partition path at >= 0.95x.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: Does the multi-partition cursor cost anything on one partition's fan-out?
Result: no. Median ns per stream (2,000 streams, 300 rounds, Cython, the shared 2-core
    machine, each checkout run alternately 3 times): one topic 48-50 before, 46-47
    after; two topics of one partition 244-246 before, 252-254 after (0.97x).
    Streams over two partitions pay for their cursors: about 530 ns.
Date: 2026-11-26
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from benches.eager import eager_send
from sse_fast.brokers.local import LocalBroker
from sse_fast.hub import Hub, PublishRequest
from sse_fast.settings import Settings


class TwoPartitions(LocalBroker):
    """Topics "a..." in partition 0, the others in partition 1."""

    partitions = 2

    def partition_of(self, name: str) -> int:
        return 0 if name.startswith("a") else 1


async def measure(scenario: str, subscribers: int, rounds: int) -> float:
    broker = TwoPartitions() if scenario == "cursor" else LocalBroker()
    hub = Hub(Settings(), broker=broker)
    loop = asyncio.get_running_loop()
    names = {"single": ["a"], "multi": ["a", "a2"], "cursor": ["a", "b"]}[scenario]
    for _ in range(subscribers):
        await hub.attach(names, None, eager_send, loop.create_future)
    requests = [[PublishRequest((name,), "x" * 40)] for name in names]
    timings = []
    for index in range(rounds):
        hub.publish_nowait(requests[index % len(requests)])
        start = time.perf_counter()
        hub.fanout.flush()
        timings.append(time.perf_counter() - start)
    timings.sort()
    return timings[len(timings) // 2] / subscribers * 1e9  # median ns per stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--scenarios", default="single,multi")
    args = parser.parse_args()
    figures = {
        scenario: round(asyncio.run(measure(scenario, args.subscribers, args.rounds)), 1)
        for scenario in args.scenarios.split(",")
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
