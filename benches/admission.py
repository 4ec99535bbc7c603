"""Admission of hostile subscription patterns: what a refusal costs a worker, and what
a client at its connect rate sending them does to an unrelated stream.

    python -m benches.admission --before ../wt-before   # this checkout and an older one
    python -m benches.admission --quick                   # smoke run, this checkout only

Issue 53, item 1: the outside probe's anonymous ``GET /events?topic=user/r1-0/*?xxx...*?``
(178 ``x``, within the default length and wildcard limits) against
``--private-topics 'user/*/inbox'`` cost 60 ms of a worker's CPU before its 401, eight
in one request 420 ms, and a client sending them at 14 requests/s took an unrelated
stream's delivery latency from 1 ms to 1.5 s. Targets: no request's admission over 1 ms
of CPU (with one and with two private patterns), and an unrelated stream's p99 under a
client at its connect-rate limit within 2x of its idle value.

* ``admission``: ``Authenticator.subscriber`` in a process of each tree (the API both
  have), CPU (``time.process_time``) of each request (after a collection of the young
  generation, so that one set off by the loop's own garbage is not counted to the
  request), every pattern distinct (no cache answers), the first request of each case
  apart (it verifies the token, once a token and worker, about 0.3 ms, and lays out
  the patterns it meets): one probe pattern a request and eight, without a credential, under a
  grant (``user/1/*``) they are outside, and, made to meet ``org/*/team/*/secret``,
  under a grant (``org/?/team/*``) they are inside, which only the containment walk
  can tell (its budget is the bound); with one private pattern and two.
* ``stream``: a real ``sse-fast serve`` of each tree (one worker, the twins' mode for
  both: the old tree has no build; nothing here runs in the native core), two private
  patterns, the default connect rate (100/s): a subscriber of ``news`` gets 20 events/s
  for ``--seconds``, idle then while one client sends eight-pattern requests at 100/s;
  delivery latency p50/p99 of each phase, the attacker's answers, the server's CPU.

Results: ``results/admission.md`` and ``.json`` (``--out``). Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benches import system
from sse_fast._http11 import SSEClient, http_request
from sse_fast._loopback import HOST, free_port
from sse_fast.loadgen._procfs import cpu_seconds, process_tree
from sse_fast.protocol import COME_BACK_HEADER as COME_BACK
from sse_fast.testing import wait_for

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent.parent
PRIVATE = {"one": "user/*/inbox", "two": "user/*/inbox,org/*/team/*/secret"}

#: run in a process of each tree: the costs of its admission, as JSON on stdout
INNER = r"""
import gc, json, sys, time
from sse_fast.app._auth import Authenticator, AuthError
from sse_fast.settings import Settings
import jwt
private, count, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secret = "x" * 40
auth = Authenticator(Settings(private_topics=private, jwt_secret=secret))
bearer = "Bearer " + jwt.encode({"sse_fast": {"subscribe": ["user/1/*"]}}, secret, "HS256")
team = "Bearer " + jwt.encode({"sse_fast": {"subscribe": ["org/?/team/*"]}}, secret, "HS256")
def probe(i, case):
    if case == "walked":  # inside the grant, which only the walk can tell
        return f"org/?/team/{i}/*?" + "x" * 150 + "*?"
    return f"user/r{i}-0/*?" + "x" * 178 + "*?"
out = {}
n = 10**6
try:  # the first request lays out the private patterns: once a worker, left out
    auth.subscriber(None, None, None, ["user/warm/*"])
except AuthError:
    pass
for case, token in (("anonymous", None), ("granted", bearer), ("walked", team)):
    costs, statuses = [], set()
    for r in range(repeat + 1):
        patterns = [probe(n + k, case) for k in range(count)]
        n += count
        gc.collect(0)  # the young objects of the loop so far: a collection of them is not this request's
        start = time.process_time()
        try:
            auth.subscriber(token, None, None, patterns)
            statuses.add(200)
        except AuthError as exc:
            statuses.add(exc.status)
        costs.append((time.process_time() - start) * 1000)
    # the first request of a case verifies its token and lays out the patterns it
    # meets, once a token and a worker: reported apart
    out[case] = {"ms": costs[1:], "first_ms": costs[0], "statuses": sorted(statuses)}
print(json.dumps(out))
"""


def admission(tree: Path, private: str, count: int, repeat: int) -> dict[str, Any]:
    """The per-request CPU (ms) of ``count`` probe patterns in ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), SSE_FAST_NO_EXTENSIONS="1")
    run = subprocess.run(
        [sys.executable, "-c", INNER, private, str(count), str(repeat)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return dict(json.loads(run.stdout))


class Server:
    """``sse-fast serve`` from ``tree`` (one worker, the twins' mode)."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Server:
        env = dict(
            os.environ,
            PYTHONPATH=str(self.tree),
            SSE_FAST_NO_EXTENSIONS="1",
            SSE_FAST_PRIVATE_TOPICS=PRIVATE["two"],
            SSE_FAST_ALLOW_ANONYMOUS_PUBLISH="1",
            SSE_FAST_DATA_DIR="",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sse_fast", "serve", "--port", str(self.port)],
            cwd=self.tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def ready() -> bool:
            try:
                return (await http_request(HOST, self.port, "GET", "/readyz"))[0] == 200
            except OSError:
                return False

        try:
            await wait_for(ready, timeout=60, interval=0.1)
        except TimeoutError:
            raise RuntimeError(f"the server of {self.tree} did not get ready in 60 s") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def _phase(server: Server, seconds: float, attack: bool) -> dict[str, Any]:
    """Events to ``news`` at 20/s for ``seconds``, with or without the attacker."""
    client = SSEClient(HOST, server.port, ["news"])
    await client.connect()
    latencies: list[float] = []
    answers: dict[str, int] = {}
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            try:
                events = await asyncio.wait_for(client.events(), 1.0)
            except TimeoutError:
                continue
            for event in events:
                latencies.append((time.time() - json.loads(event.data)["t"]) * 1000)

    async def attacker() -> None:
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            query = "&".join(f"topic=user/r{n + k}-0/*%3F{'x' * 178}*%3F" for k in range(8))
            n += 8
            status, headers, _ = await http_request(HOST, server.port, "GET", f"/events?{query}")
            key = f"{status} {headers.get(COME_BACK, '')}".strip()
            answers[key] = answers.get(key, 0) + 1
            next_at += 0.01  # 100 requests/s: the default connect_rate_per_ip
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    assert server.proc is not None
    pids = process_tree(server.proc.pid)
    cpu = cpu_seconds(pids)
    tasks = [asyncio.create_task(read())] + ([asyncio.create_task(attacker())] if attack else [])
    published = int(seconds * 20)
    for _ in range(published):
        body = json.dumps({"topic": "news", "data": json.dumps({"t": time.time()})})
        await http_request(HOST, server.port, "POST", "/publish", body.encode(), {})
        await asyncio.sleep(0.05)  # the publishing rate: 20/s

    async def all_delivered() -> bool:
        return len(latencies) >= published

    with contextlib.suppress(TimeoutError):  # a lost event shows in the report's count
        await wait_for(all_delivered, timeout=10, interval=0.01)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    client.close()
    ordered = sorted(latencies)
    return {
        "events": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2) if ordered else None,
        "server_cpu_s": round(cpu_seconds(pids) - cpu, 2),
        "attacker_answers": answers,
    }


async def stream(tree: Path, seconds: float) -> dict[str, Any]:
    async with Server(tree) as server:
        return {
            "idle": await _phase(server, seconds, attack=False),
            "attack": await _phase(server, seconds, attack=True),
        }


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} / {max(values):.3f}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Admission of hostile patterns (`python -m benches.admission`)", ""]
    lines += [f"- {k}: {v}" for k, v in report["conditions"].items()]
    lines += [
        "",
        "## A worker's CPU per request (ms, median / max), every pattern distinct",
        "",
        "After each case's first request (which verifies its token: its figure is in the "
        "JSON as first_ms).",
        "",
        "| tree | private patterns | patterns a request | anonymous | outside a grant | "
        "inside a grant (walked) |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["admission"]:
        lines.append(
            f"| {row['tree']} | {row['private']} | {row['count']} | "
            f"{_summary(row['anonymous']['ms'])} (answer {row['anonymous']['statuses']}) | "
            f"{_summary(row['granted']['ms'])} (answer {row['granted']['statuses']}) | "
            f"{_summary(row['walked']['ms'])} (answer {row['walked']['statuses']}) |"
        )
    lines += [
        "",
        "## An unrelated stream while one client sends eight-pattern requests at 100/s",
        "",
        "| tree | phase | events | p50 ms | p99 ms | server CPU s | attacker's answers |",
        "|---|---|---|---|---|---|---|",
    ]
    for tree, phases in report["stream"].items():
        for phase, row in phases.items():
            lines.append(
                f"| {tree} | {phase} | {row['events']} | {row['p50_ms']} | {row['p99_ms']} | "
                f"{row['server_cpu_s']} | {row['attacker_answers']} |"
            )
        idle, attack = phases["idle"]["p99_ms"], phases["attack"]["p99_ms"]
        if idle and attack:
            lines.append(f"| {tree} | attack / idle p99 | | | {attack / idle:.2f}x | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an older checkout to measure beside this one")
    parser.add_argument("--quick", action="store_true", help="a smoke run, written to /tmp")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each stream phase")
    parser.add_argument("--out", type=Path, default=RESULTS / "admission")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.out = 2.0, Path("/tmp/admission")
    trees = {"after": HERE}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    report: dict[str, Any] = {
        "conditions": {
            **system.machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "trees": {name: str(path) for name, path in trees.items()},
            "mode": "SSE_FAST_NO_EXTENSIONS=1 in every process (admission is pure Python)",
        },
        "admission": [],
        "stream": {},
    }
    for name, tree in trees.items():
        for private in ("one", "two"):
            for count in (1, 8):
                slow = name == "before" and count == 8
                repeat = 3 if args.quick else (10 if slow else 100)
                costs = admission(tree, PRIVATE[private], count, repeat)
                report["admission"].append(
                    {"tree": name, "private": private, "count": count, **costs}
                )
                print(f"{name} {private} x{count}: done", file=sys.stderr, flush=True)
        report["stream"][name] = asyncio.run(stream(tree, args.seconds))
        print(f"{name} stream: {report['stream'][name]}", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
