"""Several nodes on Redis against one node with its local relay (issue: a fleet, not a box).

Everything on this machine (2 cores), loopback only, bounded:

* ``latency``: 30,000 subscribers on one topic at 1 and 10 publishes/s (and
  5,000 at 10/s, which this machine sustains), through
  (a) one node ``sse-fast serve --workers 6`` with the local relay and (b) three
  nodes ``--workers 2`` each on one ``redis-server`` (the same six worker
  processes), subscribers spread evenly over the nodes, publishes sent to the
  first node. Reported: delivered/expected, p50/p99/max, the servers' CPU and
  Redis's CPU per 100,000 deliveries (the whole run, connects included, so an
  upper bound).
* ``throughput``: the three nodes on Redis, publishes at rising rates from 16
  connections until delivery falls behind: one topic (30 subscribers, 10 per
  node) and 10,000 topics (10,000 subscribers, one per topic). Reported: the
  publishes/s achieved, delivered/expected, p99.

    python -m benches.fleet [--quick] [--parts latency,throughput]

Writes ``benches/results/fleet.md`` and ``fleet.json``. Compare within one run:
the machine is shared and noisy.
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

from .system import machine

RESULTS = Path(__file__).parent / "results"
NODE_FLAGS = ("--backlog", "4096")


@contextlib.contextmanager
def single(workers: int) -> Iterator[tuple[list[ServerProcess], RedisServer | None]]:
    with ServerProcess("--workers", str(workers), *NODE_FLAGS) as node:
        yield [node], None


@contextlib.contextmanager
def fleet(nodes: int, workers: int) -> Iterator[tuple[list[ServerProcess], RedisServer | None]]:
    with RedisServer() as redis_server, contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                ServerProcess(
                    "--redis-url",
                    redis_server.url,
                    "--workers",
                    str(workers),
                    "--node-name",
                    f"node{n}",
                    *NODE_FLAGS,
                )
            )
            for n in range(nodes)
        ]
        yield servers, redis_server


def measure(setup: Any, label: str, **load: Any) -> dict[str, Any]:
    with setup as (servers, redis_server):
        pids = lambda: [p for s in servers for p in process_tree(s.proc.pid)]  # noqa: E731
        redis_pid = redis_server.proc.pid if redis_server is not None else None
        redis_before = cpu_seconds([redis_pid]) if redis_pid else 0.0
        result: Result = run_load(
            host="127.0.0.1",
            port=servers[0].port,
            name=label,
            subscriber_ports=[s.port for s in servers] if len(servers) > 1 else None,
            server_pids=pids,
            progress=lambda line: print(line, flush=True),
            **load,
        )
        redis_cpu = cpu_seconds([redis_pid]) - redis_before if redis_pid else None
    row = asdict(result)
    row["setup"] = label
    row["redis_cpu_seconds"] = None if redis_cpu is None else round(redis_cpu, 2)
    row["redis_cpu_ms_per_100k"] = (
        None
        if redis_cpu is None or not result.delivered
        else round(redis_cpu * 1000 * 100_000 / result.delivered, 1)
    )
    row["server_cpu_ms_per_100k"] = (
        None
        if not result.server_cpu_seconds or not result.delivered
        else round(result.server_cpu_seconds * 1000 * 100_000 / result.delivered, 1)
    )
    print(json.dumps({k: row[k] for k in ("setup", "publish_rate", "delivered", "p99_ms")}))
    return row


def latency(quick: bool) -> list[dict[str, Any]]:
    duration = 5 if quick else 20
    rows = []
    # 30,000 x 10/s (300,000 deliveries/s) is past what these two cores deliver with
    # the load generator on them: measured too, but the publisher is held back
    # (see "achieved"), so 5,000 x 10/s is the like-for-like comparison at that rate
    loads = [(30_000, 1.0), (30_000, 10.0), (5_000, 10.0)]
    for connections, rate in loads:
        if quick:
            connections //= 10
        load = {"connections": connections, "rate": rate, "duration": duration, "warmup": 2}
        rows.append(measure(single(6), "1 node x 6 workers, local relay", **load))
        rows.append(measure(fleet(3, 2), "3 nodes x 2 workers, Redis", **load))
    return rows


def throughput(quick: bool) -> list[dict[str, Any]]:
    rows = []
    # few subscribers per topic, so that the publish path, not the fan-out, is measured
    for topics, connections in ((1, 30), (10_000, 10_000)):
        if quick:
            topics, connections = min(topics, 1000), min(connections, 1000)
        for rate in (250, 500, 1000, 2000, 4000) if not quick else (500, 2000):
            row = measure(
                fleet(3, 2),
                f"3 nodes x 2 workers, Redis, {topics} topic(s)",
                connections=connections,
                topics=topics,
                rate=float(rate),
                duration=5 if quick else 10,
                warmup=2,
                publishers=16,
            )
            row["topics"] = topics
            rows.append(row)
            if (
                row["published"] < 0.9 * rate * row["duration"]
                or row["lost"]
                or row["p99_ms"] > 1000
            ):
                break  # past saturation
    return rows


def write(results: dict[str, list[dict[str, Any]]], conditions: dict[str, Any]) -> None:
    """Write the parts run now, keeping an earlier run's other parts (each row
    says its run)."""
    RESULTS.mkdir(exist_ok=True)
    for rows in results.values():
        for row in rows:
            row.setdefault("run", f"{conditions['date']} {conditions['git']}")
    path = RESULTS / "fleet.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        for part, rows in earlier.get("results", {}).items():
            if part not in results:
                machine_then = earlier.get("machine", {})
                for row in rows:
                    row.setdefault("run", f"{machine_then.get('date')} {machine_then.get('git')}")
                results = {part: rows, **results}
    (RESULTS / "fleet.json").write_text(
        json.dumps({"machine": conditions, "results": results}, indent=2) + "\n"
    )
    lines = [
        "# A fleet on Redis against one node (`python -m benches.fleet`)",
        "",
        "Everything on this machine (2 cores, loopback). One node: `sse-fast serve --workers 6`",
        "(local relay). Fleet: three `sse-fast serve --workers 2 --redis-url ...` on one",
        "`redis-server` (no persistence), subscribers spread evenly over the three nodes,",
        "publishes sent to the first. The load generator shares the two cores. CPU per",
        "100,000 deliveries: the servers' (all processes) and Redis's, over the whole run",
        "(connects included: an upper bound).",
        "",
        "Machine (the latest run): " + ", ".join(f"{k} {v}" for k, v in conditions.items()),
        "",
    ]
    if "latency" in results:
        lines += [
            "## Latency at the same load",
            "",
            "| setup | subscribers | publishes/s asked | achieved | delivered / expected "
            "| p50 | p99 | max | servers CPU ms / 100k | Redis CPU ms / 100k |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["latency"]:
            lines.append(
                f"| {r['setup']} | {r['connected']:,} | {r['publish_rate']:g} "
                f"| {r['published'] / r['duration']:.1f} "
                f"| {r['delivered']:,} / {r['expected']:,} | {r['p50_ms']:.0f} ms "
                f"| {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['server_cpu_ms_per_100k']} "
                f"| {r['redis_cpu_ms_per_100k'] if r['redis_cpu_ms_per_100k'] is not None else '-'} |"
            )
        by_load: dict[tuple[int, float], list[dict[str, Any]]] = {}
        for r in results["latency"]:
            by_load.setdefault((r["connections"], r["publish_rate"]), []).append(r)
        lines.append("")
        for (connections, rate), pair in by_load.items():
            if len(pair) == 2 and pair[0]["p99_ms"]:
                relay, redis_row = pair
                held = [r["setup"] for r in pair if r["published"] < 0.9 * rate * r["duration"]]
                note = f" (publisher held back: {', '.join(held)})" if held else ""
                lines.append(
                    f"- {connections:,} subscribers, {rate:g} publishes/s: p99 through Redis / "
                    f"through the relay **{redis_row['p99_ms'] / relay['p99_ms']:.2f}x** "
                    f"(target: at most 1.3x){note}"
                )
        lines.append("")
    if "throughput" in results:
        lines += [
            "## Publishes through Redis (16 publisher connections to the first node)",
            "",
            "Rates rise until the publishes fall 10 % short, an event is lost or the p99",
            "passes 1 s; few subscribers per topic, so the publish path is what is measured.",
            "",
            "| topics | subscribers | asked publishes/s | achieved | delivered / expected "
            "| lost | p99 | Redis CPU ms / 100k |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results["throughput"]:
            achieved = r["published"] / r["duration"] if r["duration"] else 0
            lines.append(
                f"| {r['topics']:,} | {r['connected']:,} | {r['publish_rate']:g} "
                f"| {achieved:,.0f} | {r['delivered']:,} / {r['expected']:,} | {r['lost']} "
                f"| {r['p99_ms']:.0f} ms | {r['redis_cpu_ms_per_100k']} |"
            )
        lines.append("")
    (RESULTS / "fleet.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument("--parts", default="latency,throughput")
    args = parser.parse_args()
    conditions = machine()
    import granian
    import redis

    conditions["granian"] = granian.__version__
    conditions["redis-py"] = redis.__version__
    conditions["redis-server"] = (
        os.popen("redis-server --version").read().split()[2].removeprefix("v=")
    )
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.monotonic()
    for part in args.parts.split(","):
        results[part] = {"latency": latency, "throughput": throughput}[part](args.quick)
    conditions["minutes"] = round((time.monotonic() - started) / 60, 1)
    write(results, conditions)


if __name__ == "__main__":
    main()
