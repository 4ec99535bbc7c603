"""Faults of our own processes, measured (issue: a fleet, not a box).

Each scenario runs ``sse-fast serve --workers 2`` on loopback, a publisher at
``--rate`` publishes/s (each event with its own id, so a publish whose answer a
fault lost is still recognisable), and ``--clients`` subscribers that
reconnect with ``Last-Event-ID`` whenever their stream ends, as browsers do.
Then one fault:

* ``worker-kill``: ``kill -9`` of one worker (Granian starts a new one);
* ``relay-kill``: ``kill -9`` of the relay (the main process starts a new one);
* ``relay-stop``: ``kill -STOP`` of the relay for ``--stop-seconds``, then
  ``kill -CONT``.

and, with three such nodes on one ``redis-server`` (``--redis-url``; subscribers
spread over the nodes and moving to the next one when theirs is gone):

* ``redis-stop``: ``kill -STOP`` of Redis for ``--stop-seconds`` (a partition);
* ``redis-restart``: ``kill -9`` of Redis and a new one without its data;
* ``redis-failover``: a primary, two replicas and a Sentinel; ``kill -9`` of
  the primary (nodes with ``--redis-wait-replicas 1``);
* ``node-kill``: ``kill -9`` of a whole node (every process of it).

Every subscriber's received events are checked against what was published:
a subscriber *lost events silently* if an event published after its first
one is missing and no ``sse-fast-missed`` (or ``unknown``/``evicted``
resume) was said before the next event it got. Publishes whose outcome the
fault made unknown may or may not appear. Reported per scenario: subscribers
told ``resumed`` and complete, told they missed events, and silently short
(the figure that must be 0); publishes refused with 503 (and how many had
``Retry-After``); the outage (first refused to first accepted publish); the
time until every subscriber had the last event.

    python -m benches.faults [--clients 200] [--rate 200] [--scenarios ...]

Writes ``benches/results/faults.md`` and ``faults.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from sse_fast.testing import (
    HOST,
    HTTPResponseError,
    RedisSentinel,
    RedisServer,
    ServerProcess,
    wait_for,
)

from .system import machine

RESULTS = Path(__file__).parent / "results"
TOPIC = "faults"


class Subscriber:
    """Reconnects with ``Last-Event-ID`` when its stream ends; to the next of
    ``servers`` when a connection fails (a node gone)."""

    def __init__(self, servers: list[ServerProcess], first: int = 0) -> None:
        self.servers = servers
        self.at = first
        self.ids: list[str] = []  # event ids received, in order (None-id events excluded)
        self.breaks: list[int] = []  # len(ids) when a missed signal came
        self.resumes: list[str] = []
        self.reconnects = 0
        self.last_id = ""
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            server = self.servers[self.at % len(self.servers)]
            client = server.client(TOPIC, last_event_id=self.last_id)
            try:
                await client.connect(timeout=5)
            except (TimeoutError, OSError, HTTPResponseError, asyncio.IncompleteReadError):
                client.close()
                self.at += 1
                await asyncio.sleep(0.2)
                continue
            outcome = client.response_headers.get("sse-fast-resume", "none")
            self.resumes.append(outcome)
            if outcome in ("unknown", "evicted"):
                self.breaks.append(len(self.ids))
            try:
                while not self.stop and not client.closed:
                    try:
                        events = await asyncio.wait_for(client.events(), 0.5)
                    except TimeoutError:
                        continue
                    for event in events:
                        if event.event == "sse-fast-missed":
                            if outcome == "none" or self.ids:
                                self.breaks.append(len(self.ids))
                        elif event.event == "message" and event.id:
                            self.ids.append(event.id)
                    self.last_id = client.last_event_id
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                client.close()
            if not self.stop:
                self.reconnects += 1
                await asyncio.sleep(0.05)


class Publisher:
    def __init__(self, server: ServerProcess, rate: float) -> None:
        self.server = server
        self.rate = rate
        self.published: list[tuple[str, bool]] = []  # (id, certainly published)
        self.refused = 0
        self.refused_with_retry_after = 0
        self.first_refused: float | None = None
        self.recovered: float | None = None
        self.stop = False

    async def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop:
            event_id = f"p{len(self.published)}"
            body = json.dumps({"topic": TOPIC, "data": event_id, "id": event_id}).encode()
            try:
                status, headers, answer = await self.server.publish(body)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                self.published.append((event_id, False))
                status, headers = 0, {}
            if status == 200:
                self.published.append((event_id, True))
                if self.first_refused is not None and self.recovered is None:
                    self.recovered = time.monotonic()
            elif status:
                self.refused += 1
                self.refused_with_retry_after += "retry-after" in headers
                if self.first_refused is None:
                    self.first_refused = time.monotonic()
                if status != 503 or b"may or may not" in answer or b"replicas confirmed" in answer:
                    self.published.append((event_id, False))  # it may appear
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def check(subscriber: Subscriber, published: list[tuple[str, bool]]) -> str:
    """``complete``, ``told`` (missed events, and was told), or ``silent``."""
    order = {event_id: n for n, (event_id, _) in enumerate(published)}
    got = [order[i] for i in subscriber.ids if i in order]
    if not got:
        return "silent" if any(sure for _, sure in published) else "complete"
    told = set(subscriber.breaks)
    missing_told = False
    for k in range(len(got) - 1):
        between = [n for n in range(got[k] + 1, got[k + 1]) if published[n][1]]
        if between:
            if k + 1 not in told:
                return "silent"
            missing_told = True
    tail = [n for n in range(got[-1] + 1, len(published)) if published[n][1]]
    if tail:
        return "silent"
    return "told" if missing_told or told else "complete"


RELAY_SCENARIOS = ("worker-kill", "relay-kill", "relay-stop")
REDIS_SCENARIOS = ("redis-stop", "redis-restart", "redis-failover", "node-kill")


def scenario(name: str, clients: int, rate: float, stop_seconds: float) -> dict[str, Any]:
    if name in RELAY_SCENARIOS:
        with ServerProcess("--workers", "2", "--broker-down-limit", "60") as server:
            return asyncio.run(_scenario([server], name, clients, rate, stop_seconds))
    with contextlib.ExitStack() as stack:
        redis_url, primary = _redis(stack, failover=name == "redis-failover")
        flags = ["--redis-url", redis_url, "--broker-down-limit", "60"]
        flags += ["--redis-probe-interval", "1"]
        if name == "redis-failover":
            flags += ["--redis-wait-replicas", "1"]
        servers = [
            stack.enter_context(ServerProcess(*flags, "--workers", "2", "--node-name", f"node{n}"))
            for n in range(3)
        ]
        result = asyncio.run(_scenario(servers, name, clients, rate, stop_seconds, primary))
        for server in servers:  # the killed node's process group is gone already
            with contextlib.suppress(Exception):
                server.stop()
        return result


def _redis(stack: contextlib.ExitStack, failover: bool) -> tuple[str, RedisServer]:
    primary = stack.enter_context(RedisServer())
    if not failover:
        return primary.url, primary
    for _ in range(2):  # two replicas: one is left to confirm writes after the failover
        stack.enter_context(RedisServer(0, "--replicaof", HOST, str(primary.port)))
    sentinel = stack.enter_context(RedisSentinel(primary, replicas=2))
    return sentinel.url, primary


async def _fault(
    name: str,
    servers: list[ServerProcess],
    stop_seconds: float,
    redis_server: RedisServer | None,
) -> None:
    server = servers[0]
    if name in RELAY_SCENARIOS:
        stats = json.loads((await server.get("/stats"))[2])
        relay = stats["workers"][0]["relay"]["pid"]
        if name == "worker-kill":
            os.kill(stats["workers"][0]["pid"], signal.SIGKILL)
        elif name == "relay-kill":
            os.kill(relay, signal.SIGKILL)
        else:
            os.kill(relay, signal.SIGSTOP)
            await asyncio.sleep(stop_seconds)
            os.kill(relay, signal.SIGCONT)
        return
    assert redis_server is not None
    if name == "redis-stop":  # a partition: Redis does not answer
        redis_server.stop()
        await asyncio.sleep(stop_seconds)
        redis_server.cont()
    elif name == "redis-restart":  # without persistence: its data is lost
        redis_server.kill()
        await asyncio.sleep(1)
        redis_server.start()
    elif name == "redis-failover":  # Sentinel promotes a replica
        redis_server.kill()
    elif name == "node-kill":  # kill -9 of a whole node; its clients move on
        victim = servers[1]
        assert victim.proc is not None
        os.killpg(victim.proc.pid, signal.SIGKILL)


async def _scenario(
    servers: list[ServerProcess],
    name: str,
    clients: int,
    rate: float,
    stop_seconds: float,
    redis_server: RedisServer | None = None,
) -> dict[str, Any]:
    server = servers[0]
    if True:
        subscribers = [Subscriber(servers, n) for n in range(clients)]
        tasks = [asyncio.create_task(s.run()) for s in subscribers]

        async def all_connected() -> bool:
            return all(s.resumes for s in subscribers)

        await wait_for(all_connected, timeout=30)
        publisher = Publisher(server, rate)
        publishing = asyncio.create_task(publisher.run())
        await asyncio.sleep(2)
        fault_at = time.monotonic()
        await _fault(name, servers, stop_seconds, redis_server)
        await asyncio.sleep(6 if name in ("relay-stop", "redis-stop", "redis-failover") else 3)
        publisher.stop = True
        await publishing
        stopped_at = time.monotonic()
        last = next(i for i, sure in reversed(publisher.published) if sure)

        async def delivered() -> bool:
            return all(last in s.ids for s in subscribers)

        try:
            await wait_for(delivered, timeout=30)
            everyone_at = time.monotonic() - stopped_at
        except TimeoutError:
            everyone_at = None
        for s in subscribers:
            s.stop = True
        await asyncio.gather(*tasks)
        verdicts = [check(s, publisher.published) for s in subscribers]
        return {
            "scenario": name,
            "clients": clients,
            "rate": rate,
            "published": sum(sure for _, sure in publisher.published),
            "uncertain": sum(not sure for _, sure in publisher.published),
            "refused_503": publisher.refused,
            "refused_with_retry_after": publisher.refused_with_retry_after,
            "outage_s": None
            if publisher.first_refused is None or publisher.recovered is None
            else round(publisher.recovered - publisher.first_refused, 2),
            "reconnected": sum(s.reconnects > 0 for s in subscribers),
            "resumed_complete": verdicts.count("complete"),
            "told_missed": verdicts.count("told"),
            "fault_seconds_before_publishing_stopped": round(stopped_at - fault_at, 2),
            "silently_short": verdicts.count("silent"),
            "everyone_has_last_s": None if everyone_at is None else round(everyone_at, 2),
        }


def write(results: list[dict[str, Any]], conditions: dict[str, Any]) -> None:
    """Write the results, keeping earlier runs' other scenarios (each result
    carries the date and commit of its run)."""
    RESULTS.mkdir(exist_ok=True)
    for result in results:
        result.setdefault("run", f"{conditions['date']} {conditions['git']}")
    path = RESULTS / "faults.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        names = {r["scenario"] for r in results}
        machine = earlier.get("machine", {})
        kept = [
            {**r, "run": r.get("run", f"{machine.get('date')} {machine.get('git')}")}
            for r in earlier.get("results", [])
            if r["scenario"] not in names
        ]
        order = list(RELAY_SCENARIOS + REDIS_SCENARIOS)
        results = sorted(
            kept + results,
            key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else 99,
        )
    path.write_text(json.dumps({"machine": conditions, "results": results}, indent=2) + "\n")
    lines = [
        "# Faults of our own processes (`python -m benches.faults`)",
        "",
        "Relay faults: `sse-fast serve --workers 2`. Redis faults: three such nodes with",
        "`--redis-url` on one `redis-server` (redis-failover: a primary, two replicas and",
        "a Sentinel, `--redis-wait-replicas 1`), subscribers spread over the nodes, moving",
        "to the next node when theirs is gone; publishes to the first node. redis-stop:",
        "SIGSTOP of Redis for the stop time (a partition); redis-restart: kill -9 and",
        "start again without persistence (its data lost: streams are told);",
        "redis-failover: kill -9 of the primary; node-kill: kill -9 of a whole node.",
        "",
        "Loopback only; a publisher at the given rate (each",
        "event with its own id); subscribers that reconnect with `Last-Event-ID` when",
        "their stream ends. *Silently short*: a subscriber missing a published event",
        "without an `sse-fast-missed` event or an `unknown`/`evicted` resume before",
        "the next event it got: must be 0. *Uncertain*: publishes whose answer the",
        "fault lost (connection reset), which may or may not appear. *Outage*: from",
        "the first refused publish to the next accepted one (relay-stop: a publish in",
        "flight when the relay stopped waits for the workers' ping timeout, 4 s, before",
        "its 503). *Last event everywhere*: from the last publish until every subscriber",
        "had it. Publishing runs 2 s before the fault and 3 s after it ends (relay-stop:",
        "the relay is stopped 10 s, then publishing goes on 6 s). *Reconnected*:",
        "subscribers whose stream ended (those on the killed worker).",
        "",
        "Machine (the latest run; each row says its run): "
        + ", ".join(f"{k} {v}" for k, v in conditions.items()),
        "",
        "| fault | clients | publishes/s | published (uncertain) | refused 503 (with Retry-After) "
        "| outage | reconnected | complete | told they missed | silently short "
        "| last event everywhere | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        outage = "-" if r["outage_s"] is None else f"{r['outage_s']} s"
        last = "never" if r["everyone_has_last_s"] is None else f"{r['everyone_has_last_s']} s"
        lines.append(
            f"| {r['scenario']} | {r['clients']} | {r['rate']:g} | {r['published']} "
            f"({r['uncertain']}) | {r['refused_503']} ({r['refused_with_retry_after']}) "
            f"| {outage} | {r['reconnected']} | {r['resumed_complete']} | {r['told_missed']} "
            f"| **{r['silently_short']}** | {last} | {r['run']} |"
        )
    (RESULTS / "faults.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--stop-seconds", type=float, default=5.0)
    parser.add_argument("--scenarios", default=",".join(RELAY_SCENARIOS + REDIS_SCENARIOS))
    args = parser.parse_args()
    conditions = machine()
    import granian

    conditions["granian"] = granian.__version__
    results = []
    for name in args.scenarios.split(","):
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        result = scenario(name, args.clients, args.rate, args.stop_seconds)
        print(json.dumps(result), flush=True)
        results.append(result)
    write(results, conditions)


if __name__ == "__main__":
    main()
