"""Publishing through one Redis against partitions, shards and a Redis Cluster (issue 42).

Everything on this machine (2 cores), loopback only, bounded. Two nodes
``sse-fast serve --workers 1`` (subscribers spread over both, publishes sent to the
first by 16 connections) over each layout, in the same run:

* ``one``: one ``redis-server``, the single-sequence layout (``--redis-partitions``
  unset: one partition);
* ``partitioned``: the same Redis with ``--redis-partitions 128`` (a sequence per
  partition, what shards and a Cluster use);
* ``shards``: three ``redis-server`` with ``--redis-url`` given three times (128
  partitions spread over them);
* ``cluster``: a Redis Cluster of three masters and three replicas
  (``--redis-url redis-cluster://...``, 128 partitions over the masters' slots,
  ``SPUBLISH``; the replicas' CPU counted with Redis's).

1,000 topics, a subscriber each, publishes at rising rates. Reported per layout and
rate: the publishes/s achieved, delivered/expected, lost, p50/p99, and the CPU per
1,000 publishes of the servers (all processes, over the publishing window) and of
Redis (all ``redis-server`` processes together, from the moment every stream is
connected to the end: the warm-up's idle seconds included): what sizes a Redis (one core of Redis takes about
1,000,000 / (its ms per 1,000) publishes a second). On two cores the shards cannot
add capacity (the three Redis share the cores with the nodes and the load
generator); what this shows is the cost of each layout per publish, and that
spreading loses nothing. Ratios are against ``one`` at the same rate, in the same run.

    python -m benches.redis_scale [--quick] [--rates 1000,2000,4000]

Writes ``benches/results/redis_scale.md`` and ``redis_scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sse_fast.loadgen import Result, run_load
from sse_fast.loadgen._procfs import cpu_seconds, process_tree
from sse_fast.testing import RedisServer, ServerProcess
from tests.support.redis_cluster import RedisCluster

from .system import machine

RESULTS = Path(__file__).parent / "results"
LAYOUTS = ("one", "partitioned", "shards", "cluster")
TOPICS = 1000
PUBLISHERS = 16
#: the least ratio of a layout's achieved publishes to one Redis's at the same rate
#: that the report calls even (the issue's gate)
GATE = 0.95


@contextlib.contextmanager
def layout(name: str) -> Iterator[tuple[list[ServerProcess], list[int]]]:
    """Two nodes of one worker over the layout ``name``, and the Redis processes' pids."""
    with contextlib.ExitStack() as stack:
        if name == "cluster":
            cluster = stack.enter_context(RedisCluster())
            urls = ["--redis-url", cluster.url]
            redis_pids = [process.pid for process in cluster.processes.values()]
        else:
            count = 3 if name == "shards" else 1
            redis_servers = [stack.enter_context(RedisServer()) for _ in range(count)]
            urls = [flag for r in redis_servers for flag in ("--redis-url", r.url)]
            redis_pids = [r.proc.pid for r in redis_servers if r.proc is not None]
        partitions = ("--redis-partitions", "128") if name == "partitioned" else ()
        nodes = [
            stack.enter_context(
                ServerProcess(
                    *urls,
                    *partitions,
                    "--workers",
                    "1",
                    "--node-name",
                    f"node{n}",
                    "--backlog",
                    "4096",
                )
            )
            for n in range(2)
        ]
        yield nodes, redis_pids


def measure(name: str, rate: float, duration: float) -> dict[str, Any]:
    """One load run over layout ``name``: its figures and CPU per 1,000 publishes."""
    with layout(name) as (nodes, redis_pids):
        node_pids = [n.proc.pid for n in nodes if n.proc is not None]
        servers = lambda: [p for pid in node_pids for p in process_tree(pid)]  # noqa: E731
        # Redis's CPU from the moment every stream is connected (subscribing 1,000
        # topics is not a publish's cost); the servers' is the publishing window's
        redis_before = [cpu_seconds(redis_pids)]

        def progress(line: str) -> None:
            if " connected in " in line:
                redis_before.append(cpu_seconds(redis_pids))
            print(line, flush=True)

        result: Result = run_load(
            host="127.0.0.1",
            port=nodes[0].port,
            name=name,
            subscriber_ports=[n.port for n in nodes],
            server_pids=servers,
            connections=TOPICS,
            topics=TOPICS,
            rate=rate,
            duration=duration,
            warmup=2,
            publishers=PUBLISHERS,
            progress=progress,
        )
        redis_cpu = cpu_seconds(redis_pids) - redis_before[-1]
    return row_of(name, asdict(result), redis_cpu)


def row_of(name: str, result: dict[str, Any], redis_cpu: float) -> dict[str, Any]:
    """The report's row of one run (``result``: a ``Result`` as a dict)."""
    published = result["published"]
    row = dict(result)
    row["layout"] = name
    row["achieved"] = round(published / result["duration"], 1) if result["duration"] else 0.0
    row["redis_cpu_seconds"] = round(redis_cpu, 3)
    row["redis_cpu_ms_per_1k"] = round(redis_cpu * 1e6 / published, 2) if published else None
    server_cpu = result.get("server_cpu_seconds")
    row["server_cpu_ms_per_1k"] = (
        round(server_cpu * 1e6 / published, 2) if server_cpu and published else None
    )
    return row


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each layout against ``one`` at the same asked rate: achieved publishes and Redis
    CPU per publish, and whether the achieved ratio is within ``GATE``."""
    out = []
    base = {r["publish_rate"]: r for r in rows if r["layout"] == "one"}
    for r in rows:
        one = base.get(r["publish_rate"])
        if r["layout"] == "one" or one is None or not one["achieved"]:
            continue
        achieved = r["achieved"] / one["achieved"]
        cpu = (
            r["redis_cpu_ms_per_1k"] / one["redis_cpu_ms_per_1k"]
            if r["redis_cpu_ms_per_1k"] and one["redis_cpu_ms_per_1k"]
            else None
        )
        out.append(
            {
                "layout": r["layout"],
                "rate": r["publish_rate"],
                "achieved_ratio": round(achieved, 3),
                "redis_cpu_ratio": None if cpu is None else round(cpu, 3),
                "even": achieved >= GATE and r["lost"] == 0,
            }
        )
    return out


def report(rows: list[dict[str, Any]], conditions: dict[str, Any]) -> str:
    """The Markdown report of a run."""
    lines = [
        "# One Redis, partitions, shards and a Cluster (`python -m benches.redis_scale`)",
        "",
        f"Two nodes `sse-fast serve --workers 1` over each layout, {TOPICS:,} topics with a",
        f"subscriber each (spread over both nodes), publishes from {PUBLISHERS} connections to",
        "the first node; everything on this machine's two cores (Redis, nodes, load generator).",
        "CPU per 1,000 publishes: the servers' over the publishing window, Redis's from the",
        "moment every stream is connected (idle warm-up included: an upper bound).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in conditions.items()),
        "",
        "| layout | asked /s | achieved /s | delivered / expected | lost | p50 | p99 "
        "| servers CPU ms / 1k | Redis CPU ms / 1k |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r['publish_rate']:g} | {r['achieved']:,.0f} "
            f"| {r['delivered']:,} / {r['expected']:,} | {r['lost']} | {r['p50_ms']:.0f} ms "
            f"| {r['p99_ms']:.0f} ms | {r['server_cpu_ms_per_1k']} | {r['redis_cpu_ms_per_1k']} |"
        )
    lines += ["", f"Against one Redis at the same rate (even: achieved >= {GATE}x, none lost):", ""]
    for q in ratios(rows):
        cpu = "-" if q["redis_cpu_ratio"] is None else f"{q['redis_cpu_ratio']:.2f}x"
        lines.append(
            f"- {q['layout']} at {q['rate']:g}/s: achieved **{q['achieved_ratio']:.2f}x**, "
            f"Redis CPU per publish {cpu}: {'even' if q['even'] else 'NOT even'}"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one rate, 3 s: a smoke run")
    parser.add_argument("--rates", default="1000,2000,4000", help="publishes/s, comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    args = parser.parse_args()
    rates = [500.0] if args.quick else [float(r) for r in args.rates.split(",")]
    duration = 3.0 if args.quick else 8.0
    conditions = machine()
    conditions["redis-server"] = (
        os.popen("redis-server --version").read().split()[2].removeprefix("v=")
    )
    started = time.monotonic()
    rows = [measure(name, rate, duration) for rate in rates for name in LAYOUTS]
    conditions["minutes"] = round((time.monotonic() - started) / 60, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "redis_scale.json").write_text(
        json.dumps({"machine": conditions, "rows": rows, "ratios": ratios(rows)}, indent=2) + "\n"
    )
    (args.out / "redis_scale.md").write_text(report(rows, conditions))
    print(report(rows, conditions))


if __name__ == "__main__":
    main()
