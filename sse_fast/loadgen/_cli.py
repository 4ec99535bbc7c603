"""Load generator for SSE servers, ours or any other: many subscribers, timed
publishes, latency, loss.

Opens N subscriber connections spread over several processes (each process
holds at most ~19,000 sockets: ``ulimit -n`` is 20,000 here) and over source
addresses 127.0.0.2, 127.0.0.3, ... (about 28,000 ephemeral ports per source
address and destination). Subscribers run on uvloop with raw asyncio protocols
and parse the stream with sse_fast's parser (chunked transfer decoding
included). A publisher sends events at a fixed rate over one keep-alive
connection; each event carries the wall-clock publish time and a sequence
number, so every subscriber measures delivery latency and counts lost and
duplicate events. Everything is bounded in time and talks to loopback only, in
plain HTTP/1.1.

Usage (a server already running)::

    sse-fast loadgen --port 8000 --connections 10000 --rate 10 --duration 20

Any other SSE server: say where to subscribe (--url, --header), how to publish
(--publish-url with --publish-body, or --publish-command, or --no-publish when
the server publishes by itself) and where the stamps are in its events
(--time-field, --seq-field, --event). Templates: {topic}, {topic_raw},
{topic_json}, {user} (the subscriber's number) in --url and --header; {topic},
{topic_raw}, {topic_json}, {data}, {data_json}, {data_url} in the publish flags
({data} is JSON with the publish time t, sequence number s and publisher w)::

    sse-fast loadgen --url 'http://127.0.0.1:8000/rooms/{topic}/stream' \\
        --header 'Authorization: Bearer user-{user}' \\
        --publish-url 'http://127.0.0.1:8000/rooms/{topic}/messages' \\
        --publish-body '{"body": {data}}' --time-field body.t --seq-field body.s \\
        --source-field body.w --event message --connections 1000 --rate 10

Prints one line of figures, writes JSON with --json PATH, and exits 1 when a
connection or a publish failed or an event was lost (2 for bad flags). The
server's RSS and CPU are its process tree's (--server-pid), else those of the
processes listening on the port. From a checkout of the repository,
``python -m benches.loadgen_target --target NAME`` starts and stops a server
from benches/peers.py. From Python: ``run_load(...)`` returns a ``Result``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..loadtarget import (
    UNITS,
    CommandPublish,
    HttpPublish,
    Stamps,
    Subscription,
    TemplateError,
    parse_header,
)
from ._procfs import listening_pids, process_tree
from ._publishers import sse_fast_publish, with_token
from ._run import run_load

__all__ = ["build_parser", "main", "run_from_args"]


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
    parser.add_argument(
        "--drain",
        type=float,
        default=3.0,
        help="seconds to wait for deliveries in flight after the window (default 3)",
    )
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
        "--compressed",
        nargs="?",
        const="gzip, deflate, zstd",
        default="",
        metavar="ACCEPT_ENCODING",
        help="ask for compressed streams (Accept-Encoding: this, default 'gzip, deflate, "
        "zstd'; e.g. --compressed zstd), decode them, and report the bytes on the wire per "
        "event beside the decoded ones",
    )
    parser.add_argument(
        "--read-every",
        type=int,
        default=1,
        metavar="N",
        help="only every N-th stream reads its events (decodes, parses, times them); the "
        "others count their bytes: a latency that is the server's, not this tool's own "
        "reading of thousands of streams on the same cores (default 1: every stream)",
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
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="publish no probe events while connecting (then the time to first event waits "
        "for the warmup's events; there are none by default with more than 64 topics)",
    )
    parser.add_argument(
        "--reconnect-on-close",
        action="store_true",
        help="reconnect a stream the server ends, as a browser does: after its retry "
        "(else --retry), with Last-Event-ID; counted as reconnects, gaps as lost",
    )
    parser.add_argument(
        "--retry", type=float, default=3.0, help="seconds before such a reconnect (default 3)"
    )
    parser.add_argument(
        "--pattern-subtopics",
        type=int,
        default=0,
        metavar="N",
        help="subscribe by pattern: each client asks for TOPIC/* and the publishes of a "
        "topic go to its subtopics TOPIC/0 ... TOPIC/N-1 in turn (sse_fast's topic "
        "patterns; 0, the default: by name)",
    )
    _add_server_flags(parser)
    return parser


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that describe a server that is not sse_fast (``sse_fast.loadtarget``)."""
    sub = parser.add_argument_group("any SSE server: where to subscribe")
    sub.add_argument(
        "--url",
        help="subscribe URL template, e.g. 'http://127.0.0.1:8000/rooms/{topic}/stream' "
        "(host and port come from it; default: sse_fast's /events?topic={topic})",
    )
    sub.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a subscribe request header, templates allowed (repeatable), "
        "e.g. 'Authorization: Bearer user-{user}'",
    )
    sub.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="NAME",
        help="a topic (repeatable; default: --topics names bench-0, bench-1, ...)",
    )
    pub = parser.add_argument_group("any SSE server: how to publish")
    pub.add_argument(
        "--publish-url", help="publish URL template, e.g. 'http://127.0.0.1:8000/pub/{topic}'"
    )
    pub.add_argument("--publish-method", default="POST", help="its method (default POST)")
    pub.add_argument("--publish-body", default="{data}", help="its body template (default {data})")
    pub.add_argument(
        "--publish-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a publish request header, templates allowed (repeatable)",
    )
    pub.add_argument(
        "--publish-command",
        metavar="'CMD ARGS'",
        help="run this command per event instead (no shell; templates in its arguments, "
        "e.g. 'redis-cli publish {topic_raw} {data}'); exit status 0 is a success",
    )
    pub.add_argument(
        "--no-publish",
        action="store_true",
        help="the server publishes by itself: nothing is expected, loss comes from gaps in "
        "the sequence numbers, latency from the times",
    )
    stamps = parser.add_argument_group(
        "any SSE server: where the stamps are in an event's JSON data (dotted paths)"
    )
    stamps.add_argument("--time-field", default="t", help="publish time (default t)")
    stamps.add_argument(
        "--time-unit", default="s", choices=list(UNITS), help="its unit (default s)"
    )
    stamps.add_argument("--seq-field", default="s", help="sequence number (default s)")
    stamps.add_argument(
        "--source-field", default="w", help="publisher; sequences are per publisher (default w)"
    )
    stamps.add_argument(
        "--seq-per-stream",
        action="store_true",
        help="the sequence starts again on each connection (a server's own counter, per "
        "stream): a reconnected stream is followed afresh, its first numbers not counted "
        "as duplicates (with --reconnect-on-close)",
    )
    stamps.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="NAME",
        help="an event name that counts (repeatable; default: all; no event: line is "
        "'message'); others are ignored",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what a load run must not do, and turn the server's API flags into
    ``args.subscribe``, ``args.publish`` and ``args.stamps`` (exits through
    ``parser.error``, status 2, saying what is wrong)."""
    if not args.host.startswith(("127.", "::1", "localhost")):
        parser.error("load tests target loopback only")
    if args.duration > 600:
        parser.error("--duration is bounded to 600 s")
    if not 0 <= args.drain <= 60:
        parser.error("--drain is between 0 and 60 s")
    if not 0 <= args.pattern_subtopics <= 1000:
        parser.error("--pattern-subtopics is between 0 (by name) and 1000")
    if args.read_every < 1:
        parser.error("--read-every is 1 (every stream reads its events) or more")
    if args.read_every > 1 and args.reconnect_on_close:
        parser.error(
            "--read-every reads a sample of the streams; --reconnect-on-close judges every "
            "stream's resume: run them apart"
        )
    try:
        args.subscribe = _subscription(args)
        args.publish = _publish(args)
        args.stamps = Stamps(
            time=args.time_field,
            sequence=args.seq_field,
            source=args.source_field,
            unit=args.time_unit,
            events=frozenset(args.event),
        )
    except ValueError as exc:  # TemplateError too
        parser.error(str(exc))
    for topic in args.topic:
        if not topic or any(c in topic for c in "\r\n\0"):
            parser.error(f"--topic {topic!r}: a topic is a non-empty name on one line")


def _loopback(flag: str, url: str, host: str) -> None:
    if url.startswith("https:"):
        raise ValueError(
            f"{flag} {url!r}: loadgen speaks plain HTTP/1.1, not TLS: give the server's "
            "http:// address on 127.0.0.1 (the app itself, or the port behind the TLS proxy)"
        )
    if not (host.startswith("127.") or host == "localhost"):
        raise ValueError(
            f"{flag} {url!r}: load tests target loopback only (an IPv4 address 127.x.x.x, "
            "or localhost): run loadgen on the server's machine"
        )


def _subscription(args: argparse.Namespace) -> Subscription | None:
    headers = dict(parse_header(line) for line in args.header)
    if args.url is None:
        if args.header:  # sse_fast's own API, with headers
            return Subscription(f"http://{args.host}:{args.port}/events?topic={{topic}}", headers)
        return None
    subscribe = Subscription(args.url, headers)
    _loopback("--url", args.url, subscribe.address.host)
    if not (args.publish_url or args.publish_command or args.no_publish):
        raise ValueError(
            "with --url, say how events are published: --publish-url URL (with "
            "--publish-body), --publish-command 'CMD ARGS', or --no-publish when the "
            "server publishes by itself"
        )
    return subscribe


def _publish(args: argparse.Namespace) -> HttpPublish | CommandPublish | None:
    chosen = [
        flag
        for flag, value in (
            ("--publish-url", args.publish_url),
            ("--publish-command", args.publish_command),
            ("--no-publish", args.no_publish),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)}: choose one way to publish")
    if args.publish_command:
        command = CommandPublish(args.publish_command)
        if shutil.which(command.argv[0]) is None:
            raise TemplateError(
                f"--publish-command: {command.argv[0]!r} is not a program on PATH "
                "(give its full path)"
            )
        return command
    if not args.publish_url:
        return None
    headers = dict(parse_header(line) for line in args.publish_header)
    publish = HttpPublish(args.publish_url, args.publish_method, args.publish_body, headers)
    _loopback("--publish-url", args.publish_url, publish.address.host)
    return publish


def run_from_args(args: argparse.Namespace, **keywords: Any) -> int:
    """Run the load the flags describe; ``keywords`` override run_load's arguments
    (a started target's ``host``, ``port``, ``name``, ``subscribe_path``, ...).
    Prints the result line and the problems; returns the exit status."""
    subscribe = getattr(args, "subscribe", None)
    host, port = args.host, args.port
    if subscribe is not None and args.url is not None:
        host, port = subscribe.address.host, subscribe.address.port
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "name": f"{host}:{port}",
        "connections": args.connections,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "drain": args.drain,
        "topics": args.topics,
        "processes": args.processes,
        "sources": args.sources,
        "payload_bytes": args.payload_bytes,
        "publishers": args.publishers,
        "http_version": args.http,
        "accept_encoding": args.compressed,
        "read_every": args.read_every,
        "progress": lambda line: print(line, flush=True),
        "subscribe": subscribe,
        "publish": getattr(args, "publish", None),
        "no_publish": args.no_publish,
        "stamps": getattr(args, "stamps", None) or Stamps(),
        "topic_names": args.topic or None,
        "probe": False if args.no_probe else None,
        "reconnect_on_close": args.reconnect_on_close,
        "seq_per_stream": args.seq_per_stream,
        "retry": args.retry,
        "pattern_subtopics": args.pattern_subtopics,
    }
    if args.server_pid:
        root = args.server_pid
        options["server_pids"] = lambda: process_tree(root)
    elif "server_pids" not in keywords:
        options["server_pids"] = _server_by_port(port)
    if args.token and options["publish"] is None:
        options["publish_request"] = with_token(sse_fast_publish, args.token)
    result = run_load(**{**options, **keywords})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(result), f, indent=2)
    for warning in result.warnings():  # said, not a failure
        print(f"loadgen: warning: {warning}", file=sys.stderr)
    problems = result.problems()
    for problem in problems:
        print(f"loadgen: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _server_by_port(port: int) -> Callable[[], list[int]]:
    """The server's processes found by its listening ``port``; said on stderr once when
    none can be seen (then the line's rss is "-")."""
    if listening_pids(port):
        return lambda: listening_pids(port)
    print(
        f"loadgen: no process listening on port {port} can be seen (another user's?): the "
        "server's RSS and CPU are not reported; give --server-pid PID, or run loadgen as "
        "the server's user",
        file=sys.stderr,
    )
    return list


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``sse-fast loadgen``: run a load test from the command line and report it; return the exit
    status (1 when the run had problems, said on stderr; 2 for bad arguments or a missing
    httptools)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        return run_from_args(args)
    except ImportError as exc:  # httptools (run.require_httptools says how to install it)
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
