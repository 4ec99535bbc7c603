"""ASGI or RSGI for the fan-out? The same loop app on both Granian interfaces.

``app`` below is an RSGI version of ``benches.fanout_apps.loop_app``: one
fan-out loop per publish calls every stream's ``send_bytes`` without awaiting
(Granian's RSGI ``send_bytes`` is eager too: it returns an already-finished
``PyEmptyAwaitable``). RSGI's stream channel is unbounded and gives no signal
when a client stops reading, so this app cannot bound a slow client's memory:
that is the price the measurement below puts a number against.

    python -m benches.fanout_rsgi [--connections 5000 --rate 10 --duration 10]

writes ``benches/results/fanout_rsgi.md`` and ``.json``.

Experiment, kept as the record of a decision (``benches/README.md``):

Question: ASGI or RSGI for the fan-out?
Result: the same events/s, RSGI 1-23 % less server CPU per event, but its unbounded
    channel gives no slow-client signal: the hub stays on ASGI.
Date: 2026-11-22 (benches/results/fanout_rsgi.md)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from sse_fast import encode

RESULTS = Path(__file__).parent / "results"
HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-store")]


class RSGILoopApp:
    """GET /events?topic=T streams; POST /publish {"topic","data"}; GET /healthz."""

    def __init__(self) -> None:
        self.topics: dict[str, set[Any]] = {}
        self.next_id = 0

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        if scope.path == "/events":
            topic = parse_qs(scope.query_string).get("topic", ["bench"])[0]
            transport = proto.response_stream(200, HEADERS)
            streams = self.topics.setdefault(topic, set())
            streams.add(transport)
            transport.send_bytes(b"retry: 3000\n\n")
            try:
                await proto.client_disconnect()
            finally:
                streams.discard(transport)
        elif scope.path == "/publish":
            document = orjson.loads(await proto())
            frame = encode(document["data"])
            for transport in list(self.topics.get(document["topic"], ())):
                with contextlib.suppress(RuntimeError):  # RSGIProtocolClosed: client gone
                    transport.send_bytes(frame)  # eager; never waits (unbounded channel)
            self.next_id += 1
            proto.response_bytes(
                200,
                [("content-type", "application/json")],
                orjson.dumps({"ids": [str(self.next_id)]}),
            )
        else:
            proto.response_bytes(200, [("content-type", "text/plain")], b"ok")


app = RSGILoopApp()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(
    interface: str, target: str, connections: int, rate: float, duration: float
) -> dict[str, Any]:
    from sse_fast.loadgen import run_load
    from sse_fast.loadgen._procfs import process_tree

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        interface,
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--backpressure",
        "19000",
        "--backlog",
        "4096",
        "--http",
        "1",
        "--http1-buffer-size",
        "8192",
        "--log-level",
        "warning",
        "--no-access-log",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        target,
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target} did not start") from None
                time.sleep(0.1)
        time.sleep(0.5)
        result = run_load(
            host="127.0.0.1",
            port=port,
            name=interface,
            connections=connections,
            rate=rate,
            duration=duration,
            warmup=2,
            server_pids=lambda: process_tree(proc.pid),
            progress=lambda s: print(s, flush=True),
        )
        return result.__dict__
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        for interface, target in (
            ("asgi", "benches.fanout_apps:loop_app"),
            ("rsgi", "benches.fanout_rsgi:app"),
        ):
            rows.append(measure(interface, target, args.connections, args.rate, args.duration))
    RESULTS.mkdir(exist_ok=True)
    info = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
        "connections": args.connections,
        "rate": args.rate,
        "duration": args.duration,
    }
    (RESULTS / "fanout_rsgi.json").write_text(
        json.dumps({"conditions": info, "runs": rows}, indent=2)
    )
    lines = [
        "# Fan-out loop: Granian ASGI vs RSGI (`python -m benches.fanout_rsgi`)",
        "",
        f"Conditions: {info}. Same loop app (`benches/fanout_apps.py:loop_app` vs "
        "`benches/fanout_rsgi.py:app`), same Granian flags, same load generator, "
        "alternating runs.",
        "",
        "| interface | delivered/expected | delivered/s | p50 ms | p99 ms | server cores "
        "| delivered per core-s | RSS/conn KB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['delivered']:,}/{r['expected']:,} | "
            f"{r['delivered_per_second']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['server_cores_used'] or 0:.2f} | "
            f"{r['delivered_per_server_core_second'] or 0:,.0f} | "
            f"{r['rss_per_connection_kb'] or 0:.1f} |"
        )
    (RESULTS / "fanout_rsgi.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
