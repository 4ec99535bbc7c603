"""What pattern streams cost on Redis: the publish script's directory of topics, a
pattern stream's subscribe and resume, and how soon a topic born on another node
reaches it.

A real ``redis-server`` (``sse_fast.testing.RedisServer``, no persistence) on loopback.

Each measure is taken for a fleet of one sequence and for one of 128 partitions on the
one Redis (``--redis-partitions 128``: the partition scripts, a directory per partition,
pattern streams' cursors), each on a fresh Redis.

* ``script``: Redis's own time per ``EVALSHA`` (``INFO commandstats``,
  ``usec_per_call``) of ``PUBLISH_SCRIPT`` (``PARTITION_PUBLISH_SCRIPT``) against the
  same script with the directory lines taken out (``without_directory``,
  ``without_partition_directory``), one event per call, to one of 1,000 existing
  topics (``existing``: ``XADD`` with ``NOMKSTREAM``, nothing more) and to a new topic
  each call (``new``: a refused ``XADD``, the birth's ``ZADD``s and ``PUBLISH`` more).
  The two scripts take turns, each first in half of the ``--rounds`` rounds of
  ``--calls`` calls; medians, and their ratio (a round's noise here is 10-30%).
* ``subscribe``/``resume``: two nodes in this process (two hubs on ``RedisBroker``s);
  node B published 1,000 topics ``big/<i>`` among ``--others`` others. Node A opens
  ``big/*`` (the first: the directory read, 1,000 subscriptions and history reads; then
  the median of 10 more, which find them held), and a third node resumes ``big/*`` over
  1,000 events of 1,000 topics born after its id.
* ``birth``: node A holds ``lat/*``; node B publishes to a topic A holds (``held``) or
  to a new one (``born``: the birth adopted, the marker's round trip included); the
  time from B's publish call to A's ``send``, median and 90th percentile of
  ``--samples``; and the length of the stream's last id.

    python -m benches.redis_patterns [--rounds 30] [--calls 2000] [--others 10000] [--out DIR]
    python -m benches.redis_patterns --quick        # a smoke run, to a temporary directory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import redis

from benches.eager import DONE
from benches.system import machine_and_build
from sse_fast.brokers.redis import PUBLISH_SCRIPT, RedisBroker
from sse_fast.brokers.redis._partitions import cluster_tags, partition_keys
from sse_fast.brokers.redis._scripts import (
    PARTITION_PUBLISH_SCRIPT,
    partition_publish_args,
    publish_args,
    sequence_keys,
)
from sse_fast.hub import Hub, PublishRequest
from sse_fast.settings import Settings
from sse_fast.testing import RedisServer

RESULTS = Path(__file__).resolve().parent / "results"


def without_directory(script: str) -> str:
    """``PUBLISH_SCRIPT`` without the lines that keep the directory of topics (the script
    before pattern streams); ``ValueError`` when they are not where expected."""
    out, births = re.subn(
        r"\n    local fresh = \{\}\n.*?\n    for _, topic in ipairs\(event\[4\]\) do\n",
        "\n    for _, topic in ipairs(event[4]) do\n      redis.call('XADD', prefix .. 't:' .. topic, "
        "'MAXLEN', '~', maxlen, pos .. '-0', 'f', frame, 'i', id, 'w', event[3])\n",
        script,
        flags=re.S,
    )
    out, trims = re.subn(r"\nif born then\n.*?\nend\n", "\n", out, flags=re.S)
    if births != 1 or trims != 1 or "names" in out or "XADD" not in out:
        raise ValueError("PUBLISH_SCRIPT changed: update without_directory()")
    return out


def without_partition_directory(script: str) -> str:
    """``PARTITION_PUBLISH_SCRIPT`` without the lines that keep the partition's directory of
    topics; ``ValueError`` when they are not where expected."""
    out, births = re.subn(
        r"\n    local fresh = \{\}\n.*?\n    for _, stream in ipairs\(event\[4\]\) do\n"
        r"      redis.call\('XTRIM'",
        "\n    for _, stream in ipairs(event[4]) do\n      redis.call('XADD', stream, 'MAXLEN', "
        "'~', maxlen, pos .. '-0', 'f', frame, 'i', id, 'w', event[3])\n"
        "      redis.call('XTRIM'",
        script,
        flags=re.S,
    )
    out, trims = re.subn(r"\nif born then\n.*?\nend\n", "\n", out, flags=re.S)
    if births != 1 or trims != 1 or "ZADD" in out or "XADD" not in out:
        raise ValueError("PARTITION_PUBLISH_SCRIPT changed: update without_partition_directory()")
    return out


_KEYS = partition_keys("sse:", cluster_tags(128)[0])


def _call(client: Any, sha: str, topic: str, partitioned: bool = False) -> None:
    request = [PublishRequest((topic,), "x" * 40)]
    if partitioned:  # (every topic in partition 0's keys: the script does not mind)
        keys, args = partition_publish_args(_KEYS, request, 1000, 86400.0)
        client.evalsha(sha, len(keys), *keys, *args)
        return
    args = publish_args("sse:", request, 1000, 86400.0)
    client.evalsha(sha, 2, *sequence_keys("sse:"), *args)


def script_costs(
    url: str, rounds: int, calls: int, partitioned: bool = False
) -> dict[str, dict[str, float]]:
    """Redis's microseconds per call of each script and scenario (medians of ``rounds``):
    ``PUBLISH_SCRIPT``, or (``partitioned``) ``PARTITION_PUBLISH_SCRIPT``."""
    client = redis.Redis.from_url(url)
    if partitioned:
        shas = {
            "with": client.script_load(PARTITION_PUBLISH_SCRIPT),
            "without": client.script_load(without_partition_directory(PARTITION_PUBLISH_SCRIPT)),
        }
    else:
        shas = {
            "with": client.script_load(PUBLISH_SCRIPT),
            "without": client.script_load(without_directory(PUBLISH_SCRIPT)),
        }
    for i in range(1000):
        _call(client, shas["with"], f"existing/{i}", partitioned)
    samples: dict[str, dict[str, list[float]]] = {}
    new = 0
    for round_ in range(rounds):
        order = list(shas.items()) if round_ % 2 else list(reversed(shas.items()))
        for variant, sha in order:  # each goes first in half the rounds
            for scenario in ("existing", "new"):
                client.config_resetstat()
                for n in range(calls):
                    if scenario == "new":
                        new += 1
                        topic = f"new/{new}"
                    else:
                        topic = f"existing/{n % 1000}"
                    _call(client, sha, topic, partitioned)
                stats = client.info("commandstats")["cmdstat_evalsha"]
                per = samples.setdefault(scenario, {})
                per.setdefault(variant, []).append(float(stats["usec_per_call"]))
    client.close()
    return {
        scenario: {variant: statistics.median(values) for variant, values in per.items()}
        for scenario, per in samples.items()
    }


class _Timed:
    """A stream's ``send`` that notes when a body with ``mark`` arrives."""

    def __init__(self) -> None:
        self.mark = b""
        self.at = 0.0
        self.last_id = b""

    def send(self, message: MutableMapping[str, Any]) -> Any:
        body = message.get("body", b"")
        if self.mark and self.mark in body:
            self.at = time.perf_counter()
        if b"id: " in body:
            self.last_id = body[body.rindex(b"id: ") + 4 :].split(b"\n", 1)[0]
        return DONE


async def _attach(hub: Hub, names: list[str], last: str | None = None, send: Any = None) -> Any:
    loop = asyncio.get_running_loop()
    chosen: Any = send or _Timed().send
    return await hub.attach(names, last, chosen, loop.create_future)


def _node(url: str, partitions: int) -> Hub:
    return Hub(Settings(max_topics=1_000_000), broker=RedisBroker(url, partitions=partitions))


async def node_costs(url: str, others: int, samples: int, partitions: int = 1) -> dict[str, Any]:
    """Subscribe and resume milliseconds, and birth latencies, over two or three nodes (of
    ``partitions`` partitions on the one Redis); the length of the pattern stream's ids."""
    a, b, c = _node(url, partitions), _node(url, partitions), _node(url, partitions)
    for hub in (a, b):
        await hub.start()
    try:
        for start in range(0, others, 500):
            await b.publish(
                [PublishRequest((f"other/{i}",), "x") for i in range(start, start + 500)]
            )
        await b.publish([PublishRequest((f"big/{i}",), "x") for i in range(1000)])
        watch = _Timed()
        begin = time.perf_counter()
        await _attach(a, ["big/*"], send=watch.send)
        first = time.perf_counter() - begin
        more = []
        for _ in range(10):
            begin = time.perf_counter()
            await _attach(a, ["big/*"])
            more.append(time.perf_counter() - begin)
        watch.mark = b"data: mark"
        await b.publish([PublishRequest(("big/0",), "mark")])
        while not watch.at:
            await asyncio.sleep(0)
        mark = watch.last_id.decode()  # a position, or (partitions) the stream's cursor
        await b.publish([PublishRequest((f"big/new-{i}",), "y" * 40) for i in range(1000)])
        await c.start()
        begin = time.perf_counter()
        resumed = await _attach(c, ["big/*"], mark)
        resume = time.perf_counter() - begin
        assert resumed.resume == "resumed", resumed.resume
        timed = _Timed()
        await _attach(a, ["lat/*"], send=timed.send)
        await b.publish([PublishRequest(("lat/held",), "warm")])
        latencies: dict[str, list[float]] = {"held": [], "born": []}
        for n in range(samples):
            for kind, topic in (("held", "lat/held"), ("born", f"lat/new-{n}")):
                timed.mark, timed.at = f"{kind}-{n}".encode(), 0.0
                begin = time.perf_counter()
                await b.publish([PublishRequest((topic,), f"{kind}-{n}")])
                while not timed.at:
                    await asyncio.sleep(0)
                latencies[kind].append(timed.at - begin)
        # the id of the last event: a position, or a cursor over the partitions of the
        # stream's topics (``samples`` + 1 of them) and the rest
        last_id = len(timed.last_id)
    finally:
        for hub in (a, b, c):
            await hub.stop()
    return {
        "subscribe_first_ms": first * 1e3,
        "subscribe_ms": statistics.median(more) * 1e3,
        "resume_1000_events_ms": resume * 1e3,
        "lat_topics": samples + 1,
        "last_id_characters": last_id,
        "latency_ms": {
            kind: {
                "median": statistics.median(values) * 1e3,
                "p90": statistics.quantiles(values, n=10)[-1] * 1e3,
            }
            for kind, values in latencies.items()
        },
    }


LAYOUTS = {"one": "one sequence", "partitioned": "128 partitions"}


def report(run: dict[str, Any]) -> str:
    """The markdown report of one run."""
    conditions = run["conditions"]
    lines = [
        "# Pattern streams on Redis",
        "",
        f"`python -m benches.redis_patterns` ({conditions['rounds']} rounds of "
        f"{conditions['calls']} calls; {conditions['others']} other topics; "
        f"{conditions['samples']} latency samples; one sequence and 128 partitions on one "
        f"Redis, each run on a fresh one). Machine: {run['machine']}.",
        "",
        "## The publish script's directory of topics (Redis's µs per call)",
        "",
        "| layout | one event to | without the directory | with it | ratio |",
        "|---|---|---|---|---|",
    ]
    for layout, name in LAYOUTS.items():
        script = run["script"][layout]
        for scenario, label in (("existing", "an existing topic"), ("new", "a new topic")):
            row = script[scenario]
            ratio = row["with"] / row["without"]
            lines.append(
                f"| {name} | {label} | {row['without']:.2f} | {row['with']:.2f} | {ratio:.2f}x |"
            )
    one, parts = run["nodes"]["one"], run["nodes"]["partitioned"]

    def compare(label: str, value: Any) -> str:
        a, b = value(one), value(parts)
        return f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}x |"

    lines += [
        "",
        "## A pattern stream on a node (two nodes in one process), ms",
        "",
        "| | one sequence | 128 partitions | ratio |",
        "|---|---|---|---|",
        compare("open `big/*` over 1,000 topics, first", lambda n: n["subscribe_first_ms"]),
        compare("open it again (held already; median of 10)", lambda n: n["subscribe_ms"]),
        compare(
            "resume it over 1,000 events of 1,000 topics born after the id, on a third node",
            lambda n: n["resume_1000_events_ms"],
        ),
        compare(
            "publish on B to a topic A holds, to A's send (median)",
            lambda n: n["latency_ms"]["held"]["median"],
        ),
        compare("(p90)", lambda n: n["latency_ms"]["held"]["p90"]),
        compare(
            "publish on B to a new topic, to A's send (median)",
            lambda n: n["latency_ms"]["born"]["median"],
        ),
        compare("(p90)", lambda n: n["latency_ms"]["born"]["p90"]),
        "",
        f"The id of the last event of the latency stream (`lat/*`, {one['lat_topics']} "
        f"topics): {one['last_id_characters']} characters with one sequence (a position), "
        f"{parts['last_id_characters']} with 128 partitions (a cursor over the partitions of "
        "its topics, and the rest).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--others", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a smoke run, to a temporary dir")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.others, args.samples = 2, 200, 1000, 20
        if args.out == RESULTS:
            args.out = Path(tempfile.mkdtemp(prefix="redis-patterns-"))
    script, nodes = {}, {}
    for layout, partitions in (("one", 1), ("partitioned", 128)):
        with RedisServer(0) as server:
            script[layout] = script_costs(server.url, args.rounds, args.calls, partitions > 1)
        with RedisServer(0) as server:
            found = node_costs(server.url, args.others, args.samples, partitions)
            nodes[layout] = asyncio.run(found)
    run = {
        "machine": machine_and_build(),
        "conditions": {
            "rounds": args.rounds,
            "calls": args.calls,
            "others": args.others,
            "samples": args.samples,
        },
        "script": script,
        "nodes": nodes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_patterns.json").write_text(json.dumps(run, indent=2) + "\n")
    (args.out / "redis_patterns.md").write_text(report(run))
    print(report(run))


if __name__ == "__main__":
    main()
