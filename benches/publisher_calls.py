"""``Publisher.publish`` from many tasks at once: calls going together against one
request per call, in the same run.

One ``sse-fast serve`` (one worker, anonymous publishing, no rate limit) on loopback and,
in this process, a ``Publisher`` (4 connections) whose ``--tasks`` tasks each call
``publish()`` in a loop, one event to a random one of 10,000 ``user/<n>`` topics, for
``--seconds``: with ``coalesce=True`` (the default: calls made while requests are in
flight go together) and ``coalesce=False`` (one ``POST /publish`` per call, as before),
taking turns for ``--rounds`` rounds. Each figure is the median over the rounds of
calls/s, and of each round's p50/p99 call latency; requests per call say how much went
together. No subscribers: what this measures is the publishing path (the server's
HTTP and the sequencing), where one request per call spends most of its time.

    python -m benches.publisher_calls [--tasks 64] [--seconds 5] [--rounds 3] [--out DIR]
    python -m benches.publisher_calls --quick        # a smoke run, to a temporary directory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benches.system import machine_and_build
from sse_fast.publisher import Publisher
from sse_fast.testing import HOST, ServerProcess

RESULTS = Path(__file__).resolve().parent / "results"


async def one_round(port: int, coalesce: bool, tasks: int, seconds: float) -> dict[str, float]:
    """Calls/s, latency percentiles (ms) and requests per call for one round."""
    latencies: list[float] = []
    rng = random.Random(44)
    async with Publisher(f"http://{HOST}:{port}", coalesce=coalesce, connections=4) as publisher:
        deadline = time.perf_counter() + seconds

        async def task() -> None:
            while time.perf_counter() < deadline:
                begin = time.perf_counter()
                await publisher.publish(f"user/{rng.randrange(10_000)}", {"n": 1, "text": "hi"})
                latencies.append(time.perf_counter() - begin)

        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(tasks)))
        took = time.perf_counter() - started
        figures = publisher.batches.figures()
    cuts = statistics.quantiles(latencies, n=100)
    requests = figures["requests"] if coalesce else len(latencies)
    return {
        "calls_per_s": len(latencies) / took,
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "requests_per_call": requests / len(latencies),
    }


def run(tasks: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Both ways, taking turns (each first in half the rounds); medians per way."""
    samples: dict[str, list[dict[str, float]]] = {"together": [], "one_per_call": []}
    with ServerProcess(publish_rate=0) as server:
        for round_ in range(rounds):
            ways = [("together", True), ("one_per_call", False)]
            for name, coalesce in ways if round_ % 2 == 0 else reversed(ways):
                figures = asyncio.run(one_round(server.port, coalesce, tasks, seconds))
                samples[name].append(figures)
                print(name, {k: round(v, 3) for k, v in figures.items()}, flush=True)
    return {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }


def report(result: dict[str, Any]) -> str:
    """The markdown report of one run."""
    conditions = result["conditions"]
    together, single = result["ways"]["together"], result["ways"]["one_per_call"]
    lines = [
        "# Publisher.publish() from many tasks",
        "",
        f"`python -m benches.publisher_calls`: {conditions['tasks']} tasks, "
        f"{conditions['seconds']} s per round, {conditions['rounds']} rounds taking turns; "
        "one worker, no subscribers, 10,000 topics. Machine: "
        f"{result['machine']}.",
        "",
        "| publish() calls | calls/s | p50 ms | p99 ms | requests per call |",
        "|---|---|---|---|---|",
    ]
    for label, row in (("go together (default)", together), ("one request each", single)):
        lines.append(
            f"| {label} | {row['calls_per_s']:,.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['requests_per_call']:.3f} |"
        )
    ratio = together["calls_per_s"] / single["calls_per_s"]
    lines += ["", f"Calls/s together against one request each: {ratio:.2f}x.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a smoke run, to a temporary dir")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
        if args.out == RESULTS:
            args.out = Path(tempfile.mkdtemp(prefix="publisher-calls-"))
    result = {
        "machine": machine_and_build(),
        "conditions": {"tasks": args.tasks, "seconds": args.seconds, "rounds": args.rounds},
        "ways": run(args.tasks, args.seconds, args.rounds),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "publisher_calls.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "publisher_calls.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
