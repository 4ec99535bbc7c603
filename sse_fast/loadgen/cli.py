"""Load generator for SSE servers: many subscribers, timed publishes, latency.

Opens N subscriber connections spread over several processes (each process
holds at most ~19,000 sockets: ``ulimit -n`` is 20,000 here) and over source
addresses 127.0.0.2, 127.0.0.3, ... (about 28,000 ephemeral ports per source
address and destination). Subscribers run on uvloop with raw asyncio protocols
and parse the stream with sse_fast's parser (chunked transfer decoding
included). A publisher sends events at a fixed rate over one keep-alive
connection; each event carries the wall-clock publish time and a sequence
number, so every subscriber measures delivery latency and counts lost and
duplicate events. Everything is bounded in time and talks to loopback only.

Usage (a server already running)::

    sse-fast loadgen --port 8000 --connections 10000 --rate 10 --duration 20
    python -m sse_fast.loadgen --port 8000 --connections 10000 --rate 10 --duration 20

From a checkout of the repository, ``python -m benches.loadgen_target --target
sse_fast-1w ...`` (any name from ``benches/peers.py``) starts and stops the
server under test. Prints one table line, writes JSON with ``--json PATH``, and
exits 1 when a connection or a publish failed or an event was lost. From
Python: ``run_load(...)`` returns a ``Result``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from .procfs import process_tree
from .publishers import sse_fast_publish, with_token
from .run import run_load

__all__ = ["TARGET_MOVED", "build_parser", "main", "run_from_args"]

#: what ``--target`` is answered: the option moved to ``benches/loadgen_target.py``
TARGET_MOVED = (
    "--target moved out of the package: from a checkout of sse_fast, run "
    "`python -m benches.loadgen_target --target NAME ...` (names from benches/peers.py), "
    "or start the server yourself and give --port"
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags every load run takes (``benches.loadgen_target`` adds its own)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=1)
    parser.add_argument("--rate", type=float, default=10.0, help="publishes per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=0, help="client processes (0 = auto)")
    parser.add_argument("--sources", type=int, default=0, help="127.0.0.x source addresses")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument(
        "--publishers", type=int, default=1, help="concurrent publisher connections sharing --rate"
    )
    parser.add_argument(
        "--http",
        default="1.1",
        choices=["1.0", "1.1"],
        help="subscriber HTTP version (1.0: no chunked framing, cheaper client)",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        help="main PID of a running server: its process tree's CPU and RSS count",
    )
    parser.add_argument("--json", help="write the result here")
    parser.add_argument(
        "--token",
        default=os.environ.get("SSE_FAST_PUBLISH_TOKEN", ""),
        help="publish token, sent as Authorization: Bearer (default: $SSE_FAST_PUBLISH_TOKEN)",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what a load run must not do (exits through ``parser.error``)."""
    if not args.host.startswith(("127.", "::1", "localhost")):
        parser.error("load tests target loopback only")
    if args.duration > 600:
        parser.error("--duration is bounded to 600 s")


def run_from_args(args: argparse.Namespace, **keywords: Any) -> int:
    """Run the load the flags describe; ``keywords`` override run_load's arguments
    (a started target's ``host``, ``port``, ``name``, ``subscribe_path``, ...).
    Prints the result line and the problems; returns the exit status."""
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "name": f"{args.host}:{args.port}",
        "connections": args.connections,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "topics": args.topics,
        "processes": args.processes,
        "sources": args.sources,
        "payload_bytes": args.payload_bytes,
        "publishers": args.publishers,
        "http_version": args.http,
        "progress": lambda line: print(line, flush=True),
    }
    if args.server_pid:
        root = args.server_pid
        options["server_pids"] = lambda: process_tree(root)
    if args.token:
        options["publish_request"] = with_token(sse_fast_publish, args.token)
    result = run_load(**{**options, **keywords})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(result), f, indent=2)
    problems = result.problems()
    for problem in problems:
        print(f"loadgen: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``sse-fast loadgen``: run a load test from the command line and report it; return the exit
    status (1 when the run had problems, said on stderr; 2 for bad arguments)."""
    parser = build_parser(prog)
    parser.add_argument("--target", help=argparse.SUPPRESS)  # moved to benches/
    args = parser.parse_args(argv)
    if args.target:
        print(f"loadgen: {TARGET_MOVED}", file=sys.stderr)
        return 2
    check_args(parser, args)
    return run_from_args(args)
