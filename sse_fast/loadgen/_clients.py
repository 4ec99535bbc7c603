"""The client processes: each holds a share of a run's subscribers and obeys run_load.

Theory of operation. run_load starts client processes (``subscriber_process``),
each holding a share of the connections. A process connects its share, sends one
report over its pipe (connected, errors, failures, seconds, started), then obeys
``Command``s from the pipe until told to exit:

* ``(Command.MEASURE, wall_time)``: count afresh, from events published at or
  after ``wall_time`` (sent before the warmup, so a late reader misses nothing);
  ``(Command.MEASURE, (from, until))`` also ends the window (when the server
  publishes by itself, its events go on after the window);
* ``Command.RECONNECT``: drop every connection and reconnect it at once with
  ``Last-Event-ID`` (sequence tracking carries over, so gaps count as lost);
* ``Command.STOP``: stop measuring and send the final report;
* ``Command.EXIT``: reset every connection (no TIME_WAIT) and end.

Commands are ``str`` values, so the plain strings "measure", "reconnect", "stop"
and "exit" work too.

With ``reconnect_on_close``, a stream the server ends is reconnected the way a
browser's EventSource does it: after the stream's ``retry`` (or the run's default),
with ``Last-Event-ID``, again and again while it fails; its sequence numbers carry
over, so events missing across the gap count as lost (with ``seq_per_stream``, for a
server that numbers each stream from the start, they do not: the new stream is
followed afresh). Each subscriber has its index in the process (``by_index``); its
path and extra headers are found by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from enum import StrEnum
from typing import Any

from ..loadtarget import Stamps
from ._event_reading import Reading
from ._stats import ProcessStats
from ._subscribers import Subscriber, connect_one, subscribe_all

__all__ = ["Command", "subscriber_process"]


class Command(StrEnum):
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
    ``storm`` (time each client's connect and first event from the moment this
    process starts connecting), ``slow_every`` (every n-th subscriber is a slow
    consumer) with ``slow_read`` / ``slow_pause`` / ``slow_rcvbuf``, ``stamps`` (a
    ``Stamps``: which events count, where their stamps are), ``headers`` (per path, the
    extra request header lines, each ending with CRLF), ``reconnect_on_close`` with
    ``retry`` (seconds to wait when the stream named no ``retry``), ``seq_per_stream``
    (a reconnected stream follows its sequence numbers afresh), ``run_began`` (wall
    time: events stamped earlier are counted apart, ``before_run``), ``accept_encoding``
    (every request's Accept-Encoding: compressed streams, decoded as they come),
    ``read_every`` (only every n-th subscriber reads its events; the others count their
    bytes)."""
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
        self.host = host
        self.ports = port if isinstance(port, list) else [port]
        self.paths = paths
        self.sources = sources
        self.pipe = pipe
        self.http_version = http_version
        self.options = options
        self.stats = stats = ProcessStats()
        self.concurrency = int(options.get("concurrency", 256))
        self.slow_every = int(options.get("slow_every", 0))
        #: > 1: subscribers whose index is no multiple of it only take their bytes in
        self.read_every = int(options.get("read_every", 1))
        stats.slow_read = float(options.get("slow_read", stats.slow_read))
        stats.slow_pause = float(options.get("slow_pause", stats.slow_pause))
        stats.slow_rcvbuf = int(options.get("slow_rcvbuf", stats.slow_rcvbuf))
        self.reading = Reading(options.get("stamps") or Stamps())
        self.headers: list[str] | None = options.get("headers")
        #: what every request asks for (``accept_encoding``: its Accept-Encoding)
        accept = options.get("accept_encoding")
        self.accept = f"Accept-Encoding: {accept}\r\n" if accept else ""
        self.reconnect_on_close = bool(options.get("reconnect_on_close"))
        self.retry = float(options.get("retry", 3.0))
        #: the server numbers each stream from the start: a new one follows afresh
        self.seq_per_stream = bool(options.get("seq_per_stream"))
        stats.run_began = float(options.get("run_began", 0.0))
        self.by_index: dict[int, Subscriber] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.exiting = False

    async def run(self) -> None:
        self.spawn(self.watch_lag())
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
            window = argument if isinstance(argument, (tuple, list)) else (argument,)
            self.stats.start_measuring(*window)
        elif command is Command.RECONNECT:
            self.spawn(self.reconnect_all())
        elif command is Command.STOP:
            self.stats.measuring = False
            self.pipe.send(self.final_report())
        elif command is Command.EXIT:
            self.exiting = True
            for task in self.tasks:
                task.cancel()
            for subscriber in self.by_index.values():  # RST: no TIME_WAIT eating the ports
                subscriber.dropped = True
                if subscriber.transport is not None:
                    subscriber.transport.abort()
            await asyncio.sleep(0.2)
            return False
        return True

    async def watch_lag(self, every: float = 0.25) -> None:
        """Keep the longest time this process's loop was late (``loop_lag_max``): a
        process starved of CPU reads its answers late, and every time it takes (a
        stream back, an event's latency) is late by as much."""
        loop, stats = asyncio.get_running_loop(), self.stats
        while not self.exiting:
            began = loop.time()
            await asyncio.sleep(every)
            late = loop.time() - began - every
            if late > stats.loop_lag_max:
                stats.loop_lag_max = late

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def subscriber(
        self, index: int, previous: Subscriber | None = None, counts_back: bool = False
    ) -> Subscriber:
        """A new subscriber for connection ``index`` (carrying ``previous``'s state over);
        ``counts_back``: a stream the server ended, reconnecting (``Subscriber.back_at``)."""
        every = self.slow_every
        slow = previous.slow if previous is not None else bool(every) and index % every == 0
        on_lost = self.lost if self.reconnect_on_close else None
        drains = self.read_every > 1 and index % self.read_every != 0
        subscriber = Subscriber(self.stats, slow, self.reading, on_lost, index, drains)
        if previous is not None:
            subscriber.requested_at = -1.0  # a reconnect: connect and first event not timed
            if not self.seq_per_stream:
                subscriber.last_seq = previous.last_seq
                subscriber.first_seq = previous.first_seq
                subscriber.judged = previous.judged
            subscriber.last_id = previous.last_id
            subscriber.first_event_at = previous.first_event_at
            if counts_back:
                subscriber.back_at = -1.0  # set at its answer
        self.by_index[index] = subscriber
        return subscriber

    def header_lines(self, index: int, last_id: str = "") -> str:
        lines = (self.headers[index] if self.headers else "") + self.accept
        return lines + (f"Last-Event-ID: {last_id}\r\n" if last_id else "")

    async def connect(self) -> None:
        """Connect every path and send the first report."""
        started = time.monotonic()
        started_wall = time.time()
        if self.options.get("storm"):
            self.stats.first_event_from = started_wall
        every = self.slow_every
        subscribers = await subscribe_all(
            self.host,
            self.ports,
            self.paths,
            self.sources,
            self.stats,
            self.http_version,
            self.concurrency,
            make_subscriber=self.subscriber,
            extra_headers=self.header_lines if self.headers or self.accept else None,
            slow=(lambda i: i % every == 0) if every else None,
        )
        self.pipe.send(
            {
                "connected": len(subscribers),
                "reading": sum(1 for s in subscribers if not s.drains),
                "errors": self.stats.connect_errors,
                "failures": self.stats.connect_failures,
                "seconds": time.monotonic() - started,
                "started": started_wall,
            }
        )

    def lost(self, subscriber: Subscriber) -> None:
        """The server ended ``subscriber``'s stream: reconnect it as a browser would."""
        if not self.exiting and self.by_index.get(subscriber.index) is subscriber:
            self.spawn(self.reconnect_closed(subscriber))

    async def reconnect_closed(self, previous: Subscriber) -> None:
        """Wait the stream's retry, reconnect with Last-Event-ID; again while it fails."""
        index, stats = previous.index, self.stats
        while not self.exiting:
            await asyncio.sleep(previous.retry_seconds(self.retry))
            if self.exiting:
                return
            new = await connect_one(
                (self.host, self.ports[index % len(self.ports)]),
                self.paths[index],
                self.sources[index % len(self.sources)],
                stats,
                lambda: self.subscriber(index, previous, counts_back=True),
                self.header_lines(index, previous.last_id),
                self.http_version,
                previous.slow,
            )
            if new is not None:  # counted back by the subscriber, at its answer
                return
            stats.connect_errors -= 1  # counted as a reconnect error, not a connect error
            stats.reconnect_errors += 1

    async def reconnect_all(self) -> None:
        """Drop every live connection and reconnect it with ``Last-Event-ID``."""
        stats = self.stats
        began = time.monotonic()
        old = [(i, s) for i, s in sorted(self.by_index.items()) if not s.closed]
        for _, subscriber in old:
            subscriber.dropped = True
            if subscriber.transport is not None:
                subscriber.transport.abort()
        errors_before = stats.connect_errors

        def last_id_header(j: int) -> str:
            index, previous = old[j]
            if previous.last_id:
                stats.resumed_with_id += 1
            return self.header_lines(index, previous.last_id)

        reconnected = await subscribe_all(
            self.host,
            self.ports,
            [self.paths[i] for i, _ in old],
            self.sources,
            stats,
            self.http_version,
            self.concurrency,
            make_subscriber=lambda j: self.subscriber(old[j][0], old[j][1]),
            extra_headers=last_id_header,
            slow=(lambda j: old[j][1].slow) if self.slow_every else None,
        )
        stats.reconnects += len(reconnected)
        stats.reconnect_errors += stats.connect_errors - errors_before
        stats.connect_errors = errors_before
        stats.reconnect_seconds = time.monotonic() - began

    def final_report(self) -> dict[str, Any]:
        stats = self.stats
        live = self.by_index.values()
        return {
            "received": stats.received,
            "measured": stats.measured,
            "duplicates": stats.duplicates,
            "lost": stats.lost,
            "closed": stats.closed,
            "foreign": stats.foreign,
            "before_run": stats.before_run,
            "delivered_unanswered": stats.delivered_unanswered,
            "wire_bytes": stats.wire_bytes,
            "decoded_bytes": stats.decoded_bytes,
            "events_read": stats.events_read,
            "drained_bytes": stats.drained_bytes,
            "codings": stats.codings,
            "histogram": stats.histogram.dump(),
            "first_event": stats.first_event.dump(),
            "connect_time": stats.connect_time.dump(),
            "slow_histogram": stats.slow_histogram.dump(),
            "slow_received": stats.slow_received,
            "slow_connections": sum(1 for s in live if s.slow and s.status == 200),
            "reconnects": stats.reconnects,
            "reconnects_on_close": stats.reconnects_on_close,
            # the last of the streams back and still open to come back (a come-back
            # answer, ended at once, is not back)
            "last_reconnect_on_close": max(
                (s.back_at for s in live if s.back_at > 0 and not s.closed), default=0.0
            ),
            "come_backs": stats.come_backs,
            "live_at_end": sum(1 for s in live if s.status == 200 and not s.closed),
            "loop_lag_max": stats.loop_lag_max,
            "failures": stats.connect_failures,
            "reconnect_errors": stats.reconnect_errors,
            "reconnect_seconds": stats.reconnect_seconds,
            "resumed_with_id": stats.resumed_with_id,
            "connected_now": sum(1 for s in live if not s.closed),
        }
