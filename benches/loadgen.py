"""Load generator for SSE servers: many subscribers, timed publishes, latency.

Opens N subscriber connections spread over several processes (each process
holds at most ~19,000 sockets: ``ulimit -n`` is 20,000 here) and over source
addresses 127.0.0.1, 127.0.0.2, ... (about 28,000 ephemeral ports per source
address and destination). Subscribers run on uvloop with raw asyncio protocols
and parse the stream with sse_fast's parser (chunked transfer decoding
included). A publisher sends events at a fixed rate over one keep-alive
connection; each event carries the wall-clock publish time and a sequence
number, so every subscriber measures delivery latency and counts lost and
duplicate events. Everything is bounded in time and talks to loopback only.

Usage (a server already running)::

    python -m benches.loadgen --port 8000 --connections 10000 --rate 10 --duration 20

or with ``--target sse_fast-1w`` (any name from ``benches.peers``) to start and
stop the server under test. Prints one table line and writes JSON with
``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from sse_fast import Parser
from sse_fast.client import ChunkedDecoder

LOOPBACK_PREFIX = "127.0.0."


# ---------------------------------------------------------------- latency histogram


class LatencyHistogram:
    """Log-bucketed latencies (1 % resolution from 1 us to ~100 s); mergeable."""

    FACTOR = math.log(1.01)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.maximum = 0.0

    def add(self, seconds: float) -> None:
        micros = max(seconds * 1e6, 1.0)
        index = int(math.log(micros) / self.FACTOR)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        if seconds > self.maximum:
            self.maximum = seconds

    def merge(self, other: dict[str, Any]) -> None:
        for key, count in other["counts"].items():
            self.counts[int(key)] = self.counts.get(int(key), 0) + count
        self.total += other["total"]
        self.maximum = max(self.maximum, other["maximum"])

    def dump(self) -> dict[str, Any]:
        return {"counts": self.counts, "total": self.total, "maximum": self.maximum}

    def percentile(self, fraction: float) -> float:
        if not self.total:
            return float("nan")
        rank = fraction * self.total
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return math.exp((index + 1) * self.FACTOR) / 1e6
        return self.maximum


# ---------------------------------------------------------------- subscriber side


class Subscriber(asyncio.Protocol):
    """One SSE connection parsed incrementally in ``data_received``."""

    __slots__ = (
        "closed",
        "connected",
        "decoder",
        "head",
        "last_seq",
        "parser",
        "stats",
        "status",
        "transport",
    )

    def __init__(self, stats: ProcessStats) -> None:
        self.stats = stats
        self.head = b""
        self.status = 0
        self.decoder: ChunkedDecoder | None = None
        self.parser = Parser()
        self.last_seq: dict[int, int] = {}  # per publisher
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.head = b""
            self.status = int(head.split(b" ", 2)[1])
            if b"transfer-encoding: chunked" in head.lower():
                self.decoder = ChunkedDecoder()
            if not self.connected.done():
                self.connected.set_result(self.status)
            if self.status != 200:
                return
        if self.decoder is not None:
            data = self.decoder.feed(data)
        stats = self.stats
        now = time.time()
        for event in self.parser.feed(data):
            try:
                payload = orjson.loads(event.data)
                sent_at, seq, source = payload["t"], payload["s"], payload.get("w", 0)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                stats.foreign += 1
                continue
            last = self.last_seq.get(source, -1)
            if sent_at >= stats.measure_from:
                stats.received += 1
            if seq <= last:
                stats.duplicates += 1
            else:
                if last >= 0 and seq != last + 1:
                    stats.lost += seq - last - 1
                self.last_seq[source] = seq
            if stats.measuring and sent_at >= stats.measure_from:
                stats.histogram.add(now - sent_at)
                stats.measured += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stats.closed += 1
        if not self.connected.done():
            self.connected.set_result(0)


@dataclass
class ProcessStats:
    received: int = 0
    measured: int = 0
    duplicates: int = 0
    lost: int = 0
    foreign: int = 0
    closed: int = 0
    connect_errors: int = 0
    measuring: bool = False
    measure_from: float = 0.0  # events published before this wall time are not counted
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source``; the port is picked at connect
    time (IP_BIND_ADDRESS_NO_PORT), which keeps bind() fast with many sockets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def _subscribe_all(
    host: str,
    port: int,
    paths: list[str],
    sources: list[str],
    stats: ProcessStats,
    http_version: str = "1.1",
    concurrency: int = 256,
) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    subscribers: list[Subscriber] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, path: str) -> None:
        source = sources[index % len(sources)]
        async with gate:
            sock = bound_socket(source)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 15)
                _, protocol = await loop.create_connection(lambda: Subscriber(stats), sock=sock)
                assert protocol.transport is not None
                protocol.transport.write(
                    f"GET {path} HTTP/{http_version}\r\nHost: {host}\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode()
                )
                status = await asyncio.wait_for(protocol.connected, 15)
                if status != 200:
                    stats.connect_errors += 1
                    protocol.transport.close()
                    return
                subscribers.append(protocol)
            except (OSError, asyncio.TimeoutError):
                stats.connect_errors += 1
                sock.close()

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    return subscribers


def _subscriber_process(
    host: str, port: int, paths: list[str], sources: list[str], pipe: Any, http_version: str = "1.1"
) -> None:
    """Child process: connect, report, measure on command, report, close."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        stats = ProcessStats()
        started = time.monotonic()
        subscribers = await _subscribe_all(host, port, paths, sources, stats, http_version)
        pipe.send(
            {
                "connected": len(subscribers),
                "errors": stats.connect_errors,
                "seconds": time.monotonic() - started,
            }
        )
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if isinstance(command, tuple) and command[0] == "measure":
                stats.measure_from = command[1]
                stats.received = stats.measured = stats.duplicates = stats.lost = 0
                stats.histogram = LatencyHistogram()
                stats.measuring = True
            elif command == "stop":
                stats.measuring = False
                pipe.send(
                    {
                        "received": stats.received,
                        "measured": stats.measured,
                        "duplicates": stats.duplicates,
                        "lost": stats.lost,
                        "closed": stats.closed,
                        "foreign": stats.foreign,
                        "histogram": stats.histogram.dump(),
                    }
                )
            elif command == "exit":
                for subscriber in subscribers:  # RST: no TIME_WAIT eating the port range
                    if subscriber.transport is not None:
                        subscriber.transport.abort()
                await asyncio.sleep(0.2)
                return

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())


# ---------------------------------------------------------------- publisher side


class KeepAlivePublisher:
    """Publishes over one keep-alive HTTP/1.1 connection."""

    def __init__(
        self,
        host: str,
        port: int,
        request: Callable[[str, str], tuple[str, str, dict[str, str], bytes]],
    ) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.errors = 0
        self.sent = 0

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def publish(self, topic: str, data: str) -> bool:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        method, path, headers, body = self.request(topic, data)
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            lower = head.lower()
            if b"content-length:" in lower:
                size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                await self.reader.readexactly(size)
            elif b"transfer-encoding: chunked" in lower:
                decoder = ChunkedDecoder()
                while not decoder.finished:
                    decoder.feed(await self.reader.read(65536))
            if b"connection: close" in lower:
                self.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            self.errors += 1
            self.close()
            return False
        ok = 200 <= status < 300
        self.sent += ok
        self.errors += not ok
        return ok

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def sse_fast_publish(topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
    return (
        "POST",
        "/publish",
        {"Content-Type": "application/json"},
        orjson.dumps({"topic": topic, "data": data}),
    )


# ---------------------------------------------------------------- the run


@dataclass
class Result:
    target: str
    connections: int
    connected: int
    connect_errors: int
    connect_seconds: float
    topics: int
    publish_rate: float
    published: int
    publish_errors: int
    duration: float
    expected: int
    delivered: int
    delivered_per_second: float
    lost: int
    duplicates: int
    closed_by_server: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    server_rss_idle_kb: int | None = None
    server_rss_base_kb: int | None = None
    rss_per_connection_kb: float | None = None
    client_processes: int = 1
    publishers: int = 1
    payload_bytes: int = 0
    server_cpu_seconds: float | None = None
    server_cores_used: float | None = None
    delivered_per_server_core_second: float | None = None
    http_version: str = "1.1"

    def line(self) -> str:
        rss = f"{self.rss_per_connection_kb:.1f} KB/conn" if self.rss_per_connection_kb else "-"
        per_core = (
            f" server={self.server_cores_used:.2f} cores "
            f"({self.delivered_per_server_core_second:,.0f}/core-s)"
            if self.delivered_per_server_core_second
            else ""
        )
        return (
            f"{self.target:>14} conns={self.connected}/{self.connections} "
            f"(err {self.connect_errors}, {self.connect_seconds:.1f}s) "
            f"rate={self.publish_rate:g}/s x {self.topics} topic(s) "
            f"delivered={self.delivered}/{self.expected} "
            f"({self.delivered_per_second:,.0f}/s) lost={self.lost} dup={self.duplicates} "
            f"p50={self.p50_ms:.1f}ms p99={self.p99_ms:.1f}ms p999={self.p999_ms:.1f}ms "
            f"max={self.max_ms:.1f}ms rss={rss}{per_core}"
        )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def run_load(
    *,
    host: str,
    port: int,
    name: str,
    connections: int,
    rate: float,
    duration: float,
    warmup: float = 2.0,
    topics: int = 1,
    processes: int = 0,
    sources: int = 0,
    payload_bytes: int = 64,
    subscribe_path: Callable[[str], str] = lambda t: f"/events?topic={t}",
    publish_request: Callable[
        [str, str], tuple[str, str, dict[str, str], bytes]
    ] = sse_fast_publish,
    server_pids: Callable[[], list[int]] = list,
    http_version: str = "1.1",
    publishers: int = 1,
    progress: Callable[[str], None] = lambda s: None,
) -> Result:
    """Connect, warm up, publish at ``rate`` for ``duration`` seconds, collect."""
    processes = processes or max(1, math.ceil(connections / 9000))
    sources = sources or max(1, math.ceil(connections / 8000))
    # 127.0.0.2 and up: ordinary loopback clients (127.0.0.1) keep their own port range
    source_ips = [f"{LOOPBACK_PREFIX}{i + 2}" for i in range(sources)]
    topic_names = [f"bench-{i}" for i in range(topics)]
    paths = [subscribe_path(topic_names[i % topics]) for i in range(connections)]
    base_rss = rss_kb(server_pids())
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for index in range(processes):
        share = paths[index::processes]
        parent, child = context.Pipe()
        proc = context.Process(
            target=_subscriber_process,
            args=(host, port, share, source_ips, child, http_version),
            daemon=True,
        )
        proc.start()
        pipes.append(parent)
        children.append(proc)
    try:
        started = time.monotonic()
        reports = [
            pipe.recv() if pipe.poll(120) else {"connected": 0, "errors": 0} for pipe in pipes
        ]
        connect_seconds = time.monotonic() - started
        connected = sum(r["connected"] for r in reports)
        errors = sum(r["errors"] for r in reports)
        progress(
            f"{name}: {connected}/{connections} connected in {connect_seconds:.1f}s "
            f"({errors} errors)"
        )
        time.sleep(min(2.0, warmup))
        idle_rss = rss_kb(server_pids())
        cpu_marks: list[float] = []

        async def publish_phase() -> tuple[int, int, float]:
            pubs = [KeepAlivePublisher(host, port, publish_request) for _ in range(publishers)]
            padding = "x" * max(0, payload_bytes - 48)
            seqs = [0] * publishers
            # Events stamped at or after measure_from are the measured ones, for the
            # clients and for the publish count alike: no race with the command pipe.
            window = {"from": float("inf"), "published": 0}

            async def tick(index: int, until: float) -> None:
                publisher = pubs[index]
                interval = publishers / rate
                next_at = time.monotonic() + index * interval / publishers
                while True:
                    now = time.monotonic()
                    if now >= until:
                        return
                    if now < next_at:
                        await asyncio.sleep(next_at - now)
                    seq = seqs[index]
                    for topic in topic_names if topics <= 1 else [topic_names[seq % topics]]:
                        stamp = time.time()
                        data = orjson.dumps(
                            {"t": stamp, "w": index, "s": seq, "p": padding}
                        ).decode()
                        if await publisher.publish(topic, data) and stamp >= window["from"]:
                            window["published"] += 1
                    seqs[index] = seq + 1
                    next_at += interval
                    if next_at < time.monotonic() - 1.0:  # cannot keep up: do not burst
                        next_at = time.monotonic()

            async def all_ticks(until: float) -> None:
                await asyncio.gather(*(tick(i, until) for i in range(publishers)))

            await all_ticks(time.monotonic() + warmup)
            window["from"] = time.time() + 0.5  # the clients get the command well before
            for pipe in pipes:
                pipe.send(("measure", window["from"]))
            await all_ticks(time.monotonic() + 0.5)
            begin = time.monotonic()
            cpu_marks.append(cpu_seconds(server_pids()))
            await all_ticks(begin + duration)
            elapsed = time.monotonic() - begin
            published = int(window["published"])
            for publisher in pubs:
                publisher.close()
            return published, sum(p.errors for p in pubs), elapsed

        try:
            import uvloop

            published, publish_errors, elapsed = uvloop.run(publish_phase())
        except ImportError:  # pragma: no cover
            published, publish_errors, elapsed = asyncio.run(publish_phase())
        time.sleep(3.0)  # let deliveries in flight arrive
        cpu_marks.append(cpu_seconds(server_pids()))
        for pipe in pipes:
            pipe.send("stop")
        finals = [pipe.recv() if pipe.poll(60) else {} for pipe in pipes]
        histogram = LatencyHistogram()
        for final in finals:
            if final:
                histogram.merge(final["histogram"])
        delivered = sum(f.get("received", 0) for f in finals)
        per_topic = connected / topics
        expected = int(published * per_topic) if topics > 1 else published * connected
        result = Result(
            target=name,
            connections=connections,
            connected=connected,
            connect_errors=errors,
            connect_seconds=round(connect_seconds, 2),
            topics=topics,
            publish_rate=rate,
            published=published,
            publish_errors=publish_errors,
            duration=round(elapsed, 2),
            expected=expected,
            delivered=delivered,
            delivered_per_second=round(delivered / elapsed, 1) if elapsed else 0.0,
            lost=sum(f.get("lost", 0) for f in finals),
            duplicates=sum(f.get("duplicates", 0) for f in finals),
            closed_by_server=sum(f.get("closed", 0) for f in finals),
            p50_ms=round(histogram.percentile(0.50) * 1e3, 2),
            p99_ms=round(histogram.percentile(0.99) * 1e3, 2),
            p999_ms=round(histogram.percentile(0.999) * 1e3, 2),
            max_ms=round(histogram.maximum * 1e3, 2),
            server_rss_idle_kb=idle_rss or None,
            server_rss_base_kb=base_rss or None,
            rss_per_connection_kb=round((idle_rss - base_rss) / connected, 2)
            if connected and idle_rss
            else None,
            client_processes=processes,
            payload_bytes=payload_bytes,
            http_version=http_version,
        )
        if server_pids() and len(cpu_marks) == 2 and cpu_marks[1] > cpu_marks[0]:
            used = cpu_marks[1] - cpu_marks[0]
            result.server_cpu_seconds = round(used, 2)
            result.server_cores_used = round(used / (elapsed + 1.0), 2)
            result.delivered_per_server_core_second = round(delivered / used, 1)
        progress(result.line())
        return result
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send("exit")
        for proc in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--target", help="start this server from benches.peers (e.g. sse_fast-1w)")
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
    parser.add_argument("--workers", type=int, default=1, help="server workers with --target")
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
    args = parser.parse_args(argv)
    if not args.host.startswith(("127.", "::1", "localhost")):
        parser.error("load tests target loopback only")
    if args.duration > 600:
        parser.error("--duration is bounded to 600 s")
    target = None
    kwargs: dict[str, Any] = {}
    name = f"{args.host}:{args.port}"
    if args.server_pid:
        root = args.server_pid
        kwargs["server_pids"] = lambda: process_tree(root)
    if args.target:
        from benches import peers

        targets, skipped = peers.available_targets(workers=args.workers)
        chosen = [t for t in targets if t.name == args.target]
        if not chosen:
            print(
                f"target {args.target!r} unavailable: {skipped.get(args.target, 'unknown name')}",
                file=sys.stderr,
            )
            return 2
        target = chosen[0]
        target.start()
        kwargs = {
            "subscribe_path": target.subscribe_path,
            "publish_request": target.publish_request,
            "server_pids": target.server_pids,
        }
        args.host, args.port, name = target.host, target.port, target.name
    try:
        result = run_load(
            host=args.host,
            port=args.port,
            name=name,
            connections=args.connections,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            topics=args.topics,
            processes=args.processes,
            sources=args.sources,
            payload_bytes=args.payload_bytes,
            http_version=args.http,
            progress=lambda s: print(s, flush=True),
            **kwargs,
        )
    finally:
        if target is not None:
            target.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(result), f, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
