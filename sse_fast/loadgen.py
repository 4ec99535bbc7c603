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

    sse-fast loadgen --port 8000 --connections 10000 --rate 10 --duration 20
    python -m sse_fast.loadgen --port 8000 --connections 10000 --rate 10 --duration 20

or, from a checkout of the repository, with ``--target sse_fast-1w`` (any name
from ``benches/peers.py``) to start and stop the server under test. Prints one
table line, writes JSON with ``--json PATH``, and exits 1 when a connection or a
publish failed or an event was lost. From Python: ``run_load(...)`` returns a
``Result``.
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

from ._core import Parser

try:
    import httptools
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the load generator parses HTTP with httptools ({exc}); "
        "install it with: pip install 'sse_fast[loadgen]'"
    ) from exc

__all__ = [
    "KeepAlivePublisher",
    "LatencyHistogram",
    "ProcessStats",
    "Result",
    "Subscriber",
    "bound_socket",
    "cpu_seconds",
    "main",
    "process_tree",
    "rss_kb",
    "run_load",
    "sse_fast_publish",
    "subscribe_all",
    "with_token",
]

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
        "dropped",
        "first_event_at",
        "http",
        "last_id",
        "last_seq",
        "parser",
        "slow",
        "stats",
        "status",
        "transport",
    )

    def __init__(self, stats: ProcessStats, slow: bool = False) -> None:
        self.stats = stats
        self.slow = slow  # latencies go to stats.slow_histogram (see run_load slow_every)
        self.dropped = False  # closed by us (reconnect storm): not counted as closed
        self.first_event_at = 0.0  # wall time of the first event (any event)
        self.last_id = ""  # the SSE last event id, sent back as Last-Event-ID
        self.status = 0
        # the response head and its chunked framing: httptools calls on_headers_complete
        # and on_body (the de-chunked body) from feed_data
        self.http = httptools.HttpResponseParser(self)
        self.parser = Parser()
        self.last_seq: dict[int, int] = {}  # per publisher
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.slow and self.stats.slow_pause > 0:
            asyncio.get_running_loop().call_later(self.stats.slow_read, self._pause)

    def _pause(self) -> None:
        """Slow consumer: stop reading for slow_pause s every slow_read + slow_pause s."""
        if self.closed or self.transport is None:
            return
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self.stats.slow_pause, self._resume)

    def _resume(self) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.resume_reading()
        asyncio.get_running_loop().call_later(self.stats.slow_read, self._pause)

    def data_received(self, data: bytes) -> None:
        try:
            self.http.feed_data(data)
        except httptools.HttpParserError:
            self.stats.foreign += 1  # not HTTP: the stream is over
            if self.transport is not None:
                self.transport.close()

    def on_headers_complete(self) -> None:
        self.status = self.http.get_status_code()
        if not self.connected.done():
            self.connected.set_result(self.status)

    def on_body(self, data: bytes) -> None:
        if self.status != 200:
            return
        stats = self.stats
        now = time.time()
        for event in self.parser.feed(data):
            if not self.first_event_at:
                self.first_event_at = now
                if stats.first_event_from:
                    stats.first_event.add(now - stats.first_event_from)
            if event.id:
                self.last_id = event.id
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
                if self.slow:
                    stats.slow_histogram.add(now - sent_at)
                    stats.slow_received += 1
                else:
                    stats.histogram.add(now - sent_at)
                    stats.measured += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.dropped:
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
    # why connections failed: "HTTP 429", "refused", "timeout", ... -> count
    connect_failures: dict[str, int] = field(default_factory=dict)
    measuring: bool = False
    measure_from: float = 0.0  # events published before this wall time are not counted
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    # optional features (run_load's first_event_probe, slow_every, reconnect_after):
    first_event_from: float = 0.0  # wall time the connection storm began (0: not recorded)
    first_event: LatencyHistogram = field(default_factory=LatencyHistogram)
    connect_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    slow_histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    slow_received: int = 0
    slow_read: float = 0.5  # slow consumers read for this long ...
    slow_pause: float = 0.0  # ... then stop reading for this long (0: never pause)
    slow_rcvbuf: int = 4096  # SO_RCVBUF of slow consumers' sockets
    reconnects: int = 0
    reconnect_errors: int = 0
    reconnect_seconds: float = 0.0
    resumed_with_id: int = 0


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _failure_name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return type(exc).__name__


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source``; the port is picked at connect
    time (IP_BIND_ADDRESS_NO_PORT), which keeps bind() fast with many sockets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def subscribe_all(
    host: str,
    port: int | list[int],
    paths: list[str],
    sources: list[str],
    stats: ProcessStats,
    http_version: str = "1.1",
    concurrency: int = 256,
    make_subscriber: Callable[[int], Subscriber] | None = None,
    extra_headers: Callable[[int], str] | None = None,
    slow: Callable[[int], bool] | None = None,
) -> list[Subscriber]:
    """Connect one subscriber per path. Optional: ``make_subscriber(index)`` builds
    the protocol (default ``Subscriber(stats, slow=slow(index))``),
    ``extra_headers(index)`` returns extra request header lines (each ending with
    CRLF, e.g. Last-Event-ID), ``slow(index)`` marks slow consumers (their socket
    gets ``stats.slow_rcvbuf`` as receive buffer). With several ``port``s (the nodes
    of a fleet), subscriber ``index`` connects to ``port[index % len(port)]``."""
    loop = asyncio.get_running_loop()
    ports = port if isinstance(port, list) else [port]
    subscribers: list[Subscriber] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, path: str) -> None:
        source = sources[index % len(sources)]
        async with gate:
            sock = bound_socket(source)
            is_slow = slow is not None and slow(index)
            if make_subscriber is not None:
                protocol_factory: Callable[[], Subscriber] = lambda: make_subscriber(index)  # noqa: E731
            elif is_slow:
                protocol_factory = lambda: Subscriber(stats, slow=True)  # noqa: E731
            else:
                protocol_factory = lambda: Subscriber(stats)  # noqa: E731
            try:
                if is_slow:  # a small receive buffer, set before the handshake
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, stats.slow_rcvbuf)
                await asyncio.wait_for(
                    loop.sock_connect(sock, (host, ports[index % len(ports)])), 15
                )
                _, protocol = await loop.create_connection(protocol_factory, sock=sock)
                assert protocol.transport is not None
                extra = extra_headers(index) if extra_headers is not None else ""
                protocol.transport.write(
                    f"GET {path} HTTP/{http_version}\r\nHost: {host}\r\n"
                    f"Accept: text/event-stream\r\n{extra}\r\n".encode()
                )
                status = await asyncio.wait_for(protocol.connected, 15)
                if stats.first_event_from:
                    stats.connect_time.add(time.time() - stats.first_event_from)
                if status != 200:
                    stats.connect_errors += 1
                    _count(stats.connect_failures, f"HTTP {status}")
                    protocol.transport.close()
                    return
                subscribers.append(protocol)
            except (OSError, asyncio.TimeoutError) as exc:
                stats.connect_errors += 1
                _count(stats.connect_failures, _failure_name(exc))
                sock.close()

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    return subscribers


def _subscriber_process(
    host: str,
    port: int | list[int],
    paths: list[str],
    sources: list[str],
    pipe: Any,
    http_version: str = "1.1",
    options: dict[str, Any] | None = None,
) -> None:
    """Child process: connect, report, measure on command, report, close.

    ``options`` (all optional): ``concurrency`` (connects in flight, default 256),
    ``storm`` (record each client's connect time and time to first event from the
    moment this process starts connecting), ``slow_every`` (every n-th subscriber
    is a slow consumer) with ``slow_read`` / ``slow_pause`` / ``slow_rcvbuf``.
    Besides "measure", "stop" and "exit" it obeys "reconnect": drop every
    connection and reconnect it at once, sending the last event id it saw as
    ``Last-Event-ID`` (sequence tracking carries over, so gaps count as lost)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    options = options or {}

    async def main() -> None:
        stats = ProcessStats()
        concurrency = int(options.get("concurrency", 256))
        slow_every = int(options.get("slow_every", 0))
        stats.slow_read = float(options.get("slow_read", stats.slow_read))
        stats.slow_pause = float(options.get("slow_pause", stats.slow_pause))
        stats.slow_rcvbuf = int(options.get("slow_rcvbuf", stats.slow_rcvbuf))
        by_index: dict[int, Subscriber] = {}

        def make(index: int) -> Subscriber:
            sub = Subscriber(stats, slow=bool(slow_every) and index % slow_every == 0)
            by_index[index] = sub
            return sub

        started = time.monotonic()
        started_wall = time.time()
        if options.get("storm"):
            stats.first_event_from = started_wall
        subscribers = await subscribe_all(
            host,
            port,
            paths,
            sources,
            stats,
            http_version,
            concurrency,
            make_subscriber=make if options else None,
            slow=(lambda i: i % slow_every == 0) if slow_every else None,
        )
        pipe.send(
            {
                "connected": len(subscribers),
                "errors": stats.connect_errors,
                "failures": stats.connect_failures,
                "seconds": time.monotonic() - started,
                "started": started_wall,
            }
        )
        loop = asyncio.get_running_loop()

        async def reconnect_all() -> None:
            nonlocal subscribers, by_index
            began = time.monotonic()
            live = {id(s) for s in subscribers}
            old = [(i, s) for i, s in sorted(by_index.items()) if id(s) in live]
            for _, sub in old:
                sub.dropped = True
                if sub.transport is not None:
                    sub.transport.abort()
            by_index = {}
            errors_before = stats.connect_errors

            def carry(j: int) -> Subscriber:
                previous = old[j][1]
                sub = Subscriber(stats, slow=previous.slow)
                sub.last_seq = previous.last_seq
                sub.last_id = previous.last_id
                sub.first_event_at = previous.first_event_at
                by_index[old[j][0]] = sub
                return sub

            def last_id_header(j: int) -> str:
                last = old[j][1].last_id
                if not last:
                    return ""
                stats.resumed_with_id += 1
                return f"Last-Event-ID: {last}\r\n"

            subscribers = await subscribe_all(
                host,
                port,
                [paths[i] for i, _ in old],
                sources,
                stats,
                http_version,
                concurrency,
                make_subscriber=carry,
                extra_headers=last_id_header,
                slow=(lambda j: old[j][1].slow) if slow_every else None,
            )
            stats.reconnects += len(subscribers)
            stats.reconnect_errors += stats.connect_errors - errors_before
            stats.connect_errors = errors_before
            stats.reconnect_seconds = time.monotonic() - began

        tasks: set[asyncio.Task[None]] = set()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if isinstance(command, tuple) and command[0] == "measure":
                stats.measure_from = command[1]
                stats.received = stats.measured = stats.duplicates = stats.lost = 0
                stats.histogram = LatencyHistogram()
                stats.slow_histogram = LatencyHistogram()
                stats.slow_received = 0
                stats.measuring = True
            elif command == "reconnect":
                task = asyncio.ensure_future(reconnect_all())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
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
                        "first_event": stats.first_event.dump(),
                        "connect_time": stats.connect_time.dump(),
                        "slow_histogram": stats.slow_histogram.dump(),
                        "slow_received": stats.slow_received,
                        "slow_connections": sum(1 for s in subscribers if s.slow),
                        "reconnects": stats.reconnects,
                        "reconnect_errors": stats.reconnect_errors,
                        "reconnect_seconds": stats.reconnect_seconds,
                        "resumed_with_id": stats.resumed_with_id,
                        "connected_now": sum(1 for s in subscribers if not s.closed),
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


class _Response:
    """What httptools reports of one response to a publish."""

    __slots__ = ("body", "complete")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


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
        self.failures: dict[str, int] = {}  # "HTTP 401: <the server's message>" -> count

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def publish(self, topic: str, data: str) -> bool:
        if self.writer is None:
            try:
                await self._connect()
            except OSError as exc:
                self.errors += 1
                _count(self.failures, _failure_name(exc))
                return False
        assert self.reader is not None and self.writer is not None
        method, path, headers, body = self.request(topic, data)
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        reader = self.reader

        async def read_response() -> None:
            while not response.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", None)
                parser.feed_data(chunk)

        try:
            await asyncio.wait_for(read_response(), 10)
            status, body = parser.get_status_code(), b"".join(response.body)
            if not parser.should_keep_alive():
                self.close()
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.TimeoutError,
            httptools.HttpParserError,
        ) as exc:
            self.errors += 1
            _count(self.failures, _failure_name(exc))
            self.close()
            return False
        ok = 200 <= status < 300
        self.sent += ok
        if not ok:
            self.errors += 1
            message = body[:200].decode("utf-8", "replace")
            _count(self.failures, f"HTTP {status}: {message}" if message else f"HTTP {status}")
        return ok

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def with_token(
    request: Callable[[str, str], tuple[str, str, dict[str, str], bytes]], token: str
) -> Callable[[str, str], tuple[str, str, dict[str, str], bytes]]:
    """``request`` with ``Authorization: Bearer <token>`` added."""

    def authorised(topic: str, data: str) -> tuple[str, str, dict[str, str], bytes]:
        method, path, headers, body = request(topic, data)
        return method, path, {**headers, "Authorization": f"Bearer {token}"}, body

    return authorised


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
    # optional features of run_load (None when not used)
    storm_connect_seconds: float | None = None  # slowest client process: all connected
    connect_p50_ms: float | None = None  # per client, from the storm's start
    connect_p99_ms: float | None = None
    first_event_clients: int | None = None  # clients that got a first event
    first_event_p50_ms: float | None = None  # per client, from the storm's start
    first_event_p99_ms: float | None = None
    first_event_max_ms: float | None = None  # = all connected and live (if all got one)
    slow_connections: int | None = None
    slow_delivered: int | None = None
    slow_p50_ms: float | None = None
    slow_p99_ms: float | None = None
    slow_max_ms: float | None = None
    reconnect_after: float | None = None  # seconds into the measured window
    reconnected: int | None = None
    reconnect_errors: int | None = None
    reconnect_seconds: float | None = None  # slowest client process
    reconnected_with_last_event_id: int | None = None
    connected_at_end: int | None = None
    connect_failures: dict[str, int] = field(default_factory=dict)
    publish_failures: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What went wrong in this run, each with its likely cause and fix; empty
        when every connection was made, every publish accepted and every event
        delivered once."""
        out = []
        if self.connect_errors:
            causes = ", ".join(f"{n} x {k}" for k, n in sorted(self.connect_failures.items()))
            line = f"{self.connect_errors} of {self.connections} connections failed ({causes})"
            if any(k in ("HTTP 429", "HTTP 503") for k in self.connect_failures):
                line += (
                    ": the server's connection limits refused them (sse-fast serve allows "
                    "1,000 streams and 100 new ones per second per client address by default); "
                    "start it with SSE_FAST_MAX_CONNECTIONS_PER_IP=0 "
                    "SSE_FAST_CONNECT_RATE_PER_IP=0 (or --max-connections-per-ip 0 "
                    "--connect-rate-per-ip 0) for a load test"
                )
            elif "refused" in self.connect_failures:
                line += ": is the server running on that port?"
            out.append(line)
        if self.publish_errors:
            causes = "; ".join(f"{n} x {k}" for k, n in sorted(self.publish_failures.items()))
            line = f"{self.publish_errors} publish(es) failed ({causes})"
            if any(k.startswith("HTTP 401") for k in self.publish_failures):
                line += (
                    ": publishing needs the server's token: pass --token TOKEN "
                    "(or set SSE_FAST_PUBLISH_TOKEN); `sse-fast serve` prints the token it "
                    "generated when none was configured"
                )
            elif any(k.startswith("HTTP 429") for k in self.publish_failures):
                line += ": the server's publish rate limit (--publish-rate) refused them"
            out.append(line)
        if self.lost or self.duplicates:
            out.append(f"{self.lost} event(s) lost and {self.duplicates} duplicated")
        if self.delivered < self.expected:
            out.append(f"delivered {self.delivered} of {self.expected} expected events")
        if self.connected and not self.published:
            out.append("nothing was published in the measured window")
        return out

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
    connect_concurrency: int = 256,
    first_event_probe: bool = False,
    probe_interval: float = 0.1,
    slow_every: int = 0,
    slow_read: float = 0.5,
    slow_pause: float = 2.0,
    slow_rcvbuf: int = 4096,
    reconnect_after: float | None = None,
    drain: float = 3.0,
    strict_window: bool = False,
    subscriber_ports: list[int] | None = None,
) -> Result:
    """Connect, warm up, publish at ``rate`` for ``duration`` seconds, collect.

    Optional features (off by default):

    * ``first_event_probe``: a connection storm. Every client process connects its
      share with ``connect_concurrency`` connects in flight (pass ``connections``
      for all at once) while a probe event is published to every topic each
      ``probe_interval`` s, and once more right after all are connected; each
      client's connect time and time to its first event are measured from the
      moment its process began connecting (``first_event_*`` in the result).
    * ``slow_every``: every n-th client is a slow consumer (receive buffer
      ``slow_rcvbuf``; reads for ``slow_read`` s, then pauses ``slow_pause`` s);
      its latencies are reported apart (``slow_*``), the p50/p99 are then the
      fast clients' only.
    * ``reconnect_after``: that many seconds into the measured window every
      client drops its connection and reconnects at once with ``Last-Event-ID``
      (the last id it saw); events missing afterwards count as lost.
    * ``drain``: seconds to wait for deliveries in flight after publishing.
    * ``subscriber_ports``: subscribers connect to these ports in turn (the nodes
      of a fleet) instead of ``port``; publishes still go to ``port``.
    * ``strict_window``: a publisher whose next slot falls after the end of a phase
      stops instead of publishing once more (by default each of ``publishers``
      overshoots by up to one interval, ``publishers / rate`` s, which inflates the
      publish count of short windows at low rates with many publishers).
    """
    processes = processes or max(1, math.ceil(connections / 9000))
    sources = sources or max(1, math.ceil(connections / 8000))
    # 127.0.0.2 and up: ordinary loopback clients (127.0.0.1) keep their own port range
    source_ips = [f"{LOOPBACK_PREFIX}{i + 2}" for i in range(sources)]
    topic_names = [f"bench-{i}" for i in range(topics)]
    paths = [subscribe_path(topic_names[i % topics]) for i in range(connections)]
    base_rss = rss_kb(server_pids())
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    options: dict[str, Any] = {}
    if connect_concurrency != 256:
        options["concurrency"] = connect_concurrency
    if first_event_probe:
        options["storm"] = True
    if slow_every:
        options.update(
            slow_every=slow_every,
            slow_read=slow_read,
            slow_pause=slow_pause,
            slow_rcvbuf=slow_rcvbuf,
        )
    if reconnect_after is not None:
        options["reconnect"] = True
    for index in range(processes):
        share = paths[index::processes]
        parent, child = context.Pipe()
        # each process's share spreads over the nodes evenly (its own rotation)
        ports: int | list[int] = list(subscriber_ports) if subscriber_ports else port
        args: tuple[Any, ...] = (host, ports, share, source_ips, child, http_version)
        if options:
            args += (options,)
        proc = context.Process(target=_subscriber_process, args=args, daemon=True)
        proc.start()
        pipes.append(parent)
        children.append(proc)
    prober = _Prober(host, port, publish_request, topic_names, probe_interval)
    try:
        started = time.monotonic()
        if first_event_probe:
            prober.start()
        reports = [
            pipe.recv() if pipe.poll(120) else {"connected": 0, "errors": 0} for pipe in pipes
        ]
        connect_seconds = time.monotonic() - started
        if first_event_probe:
            prober.stop()  # publishes one more probe right after all are connected
        connected = sum(r["connected"] for r in reports)
        errors = sum(r["errors"] for r in reports)
        connect_failures: dict[str, int] = {}
        for report in reports:
            failures: dict[str, int] = report.get("failures", {})  # type: ignore[assignment]
            for key, count in failures.items():
                connect_failures[key] = connect_failures.get(key, 0) + count
        progress(
            f"{name}: {connected}/{connections} connected in {connect_seconds:.1f}s "
            f"({errors} errors)"
        )
        time.sleep(min(2.0, warmup))
        idle_rss = rss_kb(server_pids())
        cpu_marks: list[float] = []

        publish_failures: dict[str, int] = {}

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
                    if strict_window and next_at >= until:
                        await asyncio.sleep(until - now)  # the next slot is past the phase
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

            # The window's start goes to the clients before the warmup: a client
            # process starved of CPU may read its command pipe late, and one that
            # got it after the window began would reset its counts and miss events.
            window_from = time.time() + warmup + 0.5
            for pipe in pipes:
                pipe.send(("measure", window_from))
            await all_ticks(time.monotonic() + warmup)
            window["from"] = window_from
            await all_ticks(time.monotonic() + max(0.0, window_from - time.time()))
            begin = time.monotonic()
            cpu_marks.append(cpu_seconds(server_pids()))
            if reconnect_after is not None:

                def reconnect() -> None:
                    progress(f"{name}: all clients drop and reconnect with Last-Event-ID")
                    for pipe in pipes:
                        pipe.send("reconnect")

                asyncio.get_running_loop().call_later(reconnect_after, reconnect)
            await all_ticks(begin + duration)
            elapsed = time.monotonic() - begin
            published = int(window["published"])
            for publisher in pubs:
                publisher.close()
                for key, count in publisher.failures.items():
                    publish_failures[key] = publish_failures.get(key, 0) + count
            return published, sum(p.errors for p in pubs), elapsed

        try:
            import uvloop

            published, publish_errors, elapsed = uvloop.run(publish_phase())
        except ImportError:  # pragma: no cover
            published, publish_errors, elapsed = asyncio.run(publish_phase())
        time.sleep(drain)  # let deliveries in flight arrive
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
            connect_failures=connect_failures,
            publish_failures=publish_failures,
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
            publishers=publishers,
            payload_bytes=payload_bytes,
            http_version=http_version,
        )
        _optional_results(result, reports, finals, first_event_probe, slow_every, reconnect_after)
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


def _merged(finals: list[dict[str, Any]], key: str) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for final in finals:
        if final.get(key):
            histogram.merge(final[key])
    return histogram


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def _optional_results(
    result: Result,
    reports: list[dict[str, Any]],
    finals: list[dict[str, Any]],
    storm: bool,
    slow_every: int,
    reconnect_after: float | None,
) -> None:
    """Fill the Result fields of run_load's optional features."""
    if storm:
        result.storm_connect_seconds = round(max(r.get("seconds", 0.0) for r in reports), 2)
        connect = _merged(finals, "connect_time")
        first = _merged(finals, "first_event")
        result.connect_p50_ms = _ms(connect.percentile(0.5))
        result.connect_p99_ms = _ms(connect.percentile(0.99))
        result.first_event_clients = first.total
        result.first_event_p50_ms = _ms(first.percentile(0.5))
        result.first_event_p99_ms = _ms(first.percentile(0.99))
        result.first_event_max_ms = _ms(first.maximum)
    if slow_every:
        slow = _merged(finals, "slow_histogram")
        result.slow_connections = sum(f.get("slow_connections", 0) for f in finals)
        result.slow_delivered = sum(f.get("slow_received", 0) for f in finals)
        result.slow_p50_ms = _ms(slow.percentile(0.5))
        result.slow_p99_ms = _ms(slow.percentile(0.99))
        result.slow_max_ms = _ms(slow.maximum)
    if reconnect_after is not None:
        result.reconnect_after = reconnect_after
        result.reconnected = sum(f.get("reconnects", 0) for f in finals)
        result.reconnect_errors = sum(f.get("reconnect_errors", 0) for f in finals)
        result.reconnect_seconds = round(max(f.get("reconnect_seconds", 0.0) for f in finals), 2)
        result.reconnected_with_last_event_id = sum(f.get("resumed_with_id", 0) for f in finals)
    if storm or slow_every or reconnect_after is not None:
        result.connected_at_end = sum(f.get("connected_now", 0) for f in finals)


class _Prober:
    """Publishes a probe event to every topic each ``interval`` s from a thread of its
    own while a connection storm runs, and once more when stopped."""

    def __init__(
        self,
        host: str,
        port: int,
        request: Callable[[str, str], tuple[str, str, dict[str, str], bytes]],
        topics: list[str],
        interval: float,
    ) -> None:
        import threading

        self.args = (host, port, request)
        self.topics = topics
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.done.set()
            self.thread.join(30)

    def _run(self) -> None:
        async def main() -> None:
            publisher = KeepAlivePublisher(*self.args)
            seq = 0
            last = False
            while True:
                last = self.done.is_set()
                for topic in self.topics:
                    data = orjson.dumps({"t": time.time(), "w": -1, "s": seq, "p": ""}).decode()
                    self.sent += await publisher.publish(topic, data)
                seq += 1
                if last:
                    break
                await asyncio.get_running_loop().run_in_executor(
                    None, self.done.wait, self.interval
                )
            publisher.close()

        asyncio.run(main())


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--target", help="start this server from benches/peers.py (e.g. sse_fast-1w; a checkout)"
    )
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
    parser.add_argument(
        "--token",
        default=os.environ.get("SSE_FAST_PUBLISH_TOKEN", ""),
        help="publish token, sent as Authorization: Bearer (default: $SSE_FAST_PUBLISH_TOKEN)",
    )
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
        try:
            from benches import peers
        except ImportError:
            print(
                "loadgen: --target starts servers from the repository's benches/peers.py; "
                "run it from a checkout of sse_fast, or start the server yourself and give "
                "--port",
                file=sys.stderr,
            )
            return 2

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
    elif args.token:
        kwargs["publish_request"] = with_token(sse_fast_publish, args.token)
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
    problems = result.problems()
    for problem in problems:
        print(f"loadgen: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
