"""The subscribing side: raw-protocol SSE connections and the client processes that hold them.

Theory of operation. run_load starts client processes (``subscriber_process``),
each holding a share of the connections. A process connects its share, sends one
report over its pipe (connected, errors, failures, seconds, started), then obeys
``Command``s from the pipe until told to exit:

* ``(Command.MEASURE, wall_time)``: count afresh, from events published at or
  after ``wall_time`` (sent before the warmup, so a late reader misses nothing);
* ``Command.RECONNECT``: drop every connection and reconnect it at once with
  ``Last-Event-ID`` (sequence tracking carries over, so gaps count as lost);
* ``Command.STOP``: stop measuring and send the final report;
* ``Command.EXIT``: reset every connection (no TIME_WAIT) and end.

Commands are ``str`` values, so the plain strings "measure", "reconnect", "stop"
and "exit" work too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

import httptools
import orjson

from .._core import Parser
from .stats import ProcessStats, count_into, failure_name

__all__ = [
    "Command",
    "Subscriber",
    "bound_socket",
    "subscribe_all",
    "subscriber_process",
]


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
        """Keep the transport; a slow subscriber starts its pauses."""
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
        """Feed the HTTP parser; a response that is not HTTP is counted as foreign and closed."""
        try:
            self.http.feed_data(data)
        except httptools.HttpParserError:
            self.stats.foreign += 1  # not HTTP: the stream is over
            if self.transport is not None:
                self.transport.close()

    def on_headers_complete(self) -> None:
        """The response head is read: resolve ``connected`` with the status."""
        self.status = self.http.get_status_code()
        if not self.connected.done():
            self.connected.set_result(self.status)

    def on_body(self, data: bytes) -> None:
        """Parse the (de-chunked) body of a 200 response: count each event received, duplicated,
        lost or foreign, and its latency when measuring."""
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
        """Count the connection as closed (unless we dropped it); ``connected`` resolves with 0 if
        it never got a response."""
        self.closed = True
        if not self.dropped:
            self.stats.closed += 1
        if not self.connected.done():
            self.connected.set_result(0)


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
                    count_into(stats.connect_failures, f"HTTP {status}")
                    protocol.transport.close()
                    return
                subscribers.append(protocol)
            except (OSError, asyncio.TimeoutError) as exc:
                stats.connect_errors += 1
                count_into(stats.connect_failures, failure_name(exc))
                sock.close()

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    return subscribers


class Command(str, Enum):
    """What run_load tells a client process over its pipe (see the module docstring)."""

    MEASURE = "measure"
    RECONNECT = "reconnect"
    STOP = "stop"
    EXIT = "exit"


def subscriber_process(
    host: str,
    port: int | list[int],
    paths: list[str],
    sources: list[str],
    pipe: Any,
    http_version: str = "1.1",
    options: dict[str, Any] | None = None,
) -> None:
    """Child process: connect, report, obey ``Command``s from ``pipe``.

    ``options`` (all optional): ``concurrency`` (connects in flight, default 256),
    ``storm`` (record each client's connect time and time to first event from the
    moment this process starts connecting), ``slow_every`` (every n-th subscriber
    is a slow consumer) with ``slow_read`` / ``slow_pause`` / ``slow_rcvbuf``."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    client = _ClientProcess(host, port, paths, sources, pipe, http_version, options or {})
    try:
        import uvloop

        uvloop.run(client.run())
    except ImportError:  # pragma: no cover
        asyncio.run(client.run())


#: the name benches and older callers import
_subscriber_process = subscriber_process


class _ClientProcess:
    """The connections of one client process and the commands it obeys."""

    def __init__(
        self,
        host: str,
        port: int | list[int],
        paths: list[str],
        sources: list[str],
        pipe: Any,
        http_version: str,
        options: dict[str, Any],
    ) -> None:
        self.address = (host, port)
        self.paths = paths
        self.sources = sources
        self.pipe = pipe
        self.http_version = http_version
        self.options = options
        self.stats = stats = ProcessStats()
        self.concurrency = int(options.get("concurrency", 256))
        self.slow_every = int(options.get("slow_every", 0))
        stats.slow_read = float(options.get("slow_read", stats.slow_read))
        stats.slow_pause = float(options.get("slow_pause", stats.slow_pause))
        stats.slow_rcvbuf = int(options.get("slow_rcvbuf", stats.slow_rcvbuf))
        self.by_index: dict[int, Subscriber] = {}
        self.subscribers: list[Subscriber] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await self.connect()
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, self.pipe.recv)
            name, argument = message if isinstance(message, tuple) else (message, None)
            if not await self.obey(Command(name), argument):
                return

    async def obey(self, command: Command, argument: Any) -> bool:
        """Carry out ``command``; False once the process should end."""
        if command is Command.MEASURE:
            self.stats.start_measuring(argument)
        elif command is Command.RECONNECT:
            task = asyncio.ensure_future(self.reconnect_all())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif command is Command.STOP:
            self.stats.measuring = False
            self.pipe.send(self.final_report())
        elif command is Command.EXIT:
            for subscriber in self.subscribers:  # RST: no TIME_WAIT eating the port range
                if subscriber.transport is not None:
                    subscriber.transport.abort()
            await asyncio.sleep(0.2)
            return False
        return True

    def _make(self, index: int) -> Subscriber:
        every = self.slow_every
        subscriber = Subscriber(self.stats, slow=bool(every) and index % every == 0)
        self.by_index[index] = subscriber
        return subscriber

    async def connect(self) -> None:
        """Connect every path and send the first report."""
        started = time.monotonic()
        started_wall = time.time()
        if self.options.get("storm"):
            self.stats.first_event_from = started_wall
        every = self.slow_every
        self.subscribers = await subscribe_all(
            *self.address,
            self.paths,
            self.sources,
            self.stats,
            self.http_version,
            self.concurrency,
            make_subscriber=self._make if self.options else None,
            slow=(lambda i: i % every == 0) if every else None,
        )
        self.pipe.send(
            {
                "connected": len(self.subscribers),
                "errors": self.stats.connect_errors,
                "failures": self.stats.connect_failures,
                "seconds": time.monotonic() - started,
                "started": started_wall,
            }
        )

    async def reconnect_all(self) -> None:
        """Drop every live connection and reconnect it with ``Last-Event-ID``."""
        stats = self.stats
        began = time.monotonic()
        live = {id(s) for s in self.subscribers}
        old = [(i, s) for i, s in sorted(self.by_index.items()) if id(s) in live]
        for _, subscriber in old:
            subscriber.dropped = True
            if subscriber.transport is not None:
                subscriber.transport.abort()
        self.by_index = {}
        errors_before = stats.connect_errors

        def carry(j: int) -> Subscriber:
            previous = old[j][1]
            subscriber = Subscriber(stats, slow=previous.slow)
            subscriber.last_seq = previous.last_seq
            subscriber.last_id = previous.last_id
            subscriber.first_event_at = previous.first_event_at
            self.by_index[old[j][0]] = subscriber
            return subscriber

        def last_id_header(j: int) -> str:
            last = old[j][1].last_id
            if not last:
                return ""
            stats.resumed_with_id += 1
            return f"Last-Event-ID: {last}\r\n"

        self.subscribers = await subscribe_all(
            *self.address,
            [self.paths[i] for i, _ in old],
            self.sources,
            stats,
            self.http_version,
            self.concurrency,
            make_subscriber=carry,
            extra_headers=last_id_header,
            slow=(lambda j: old[j][1].slow) if self.slow_every else None,
        )
        stats.reconnects += len(self.subscribers)
        stats.reconnect_errors += stats.connect_errors - errors_before
        stats.connect_errors = errors_before
        stats.reconnect_seconds = time.monotonic() - began

    def final_report(self) -> dict[str, Any]:
        stats = self.stats
        return {
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
            "slow_connections": sum(1 for s in self.subscribers if s.slow),
            "reconnects": stats.reconnects,
            "reconnect_errors": stats.reconnect_errors,
            "reconnect_seconds": stats.reconnect_seconds,
            "resumed_with_id": stats.resumed_with_id,
            "connected_now": sum(1 for s in self.subscribers if not s.closed),
        }
