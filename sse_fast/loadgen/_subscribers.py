"""The subscribing side: raw-protocol SSE connections, and connecting them.

Theory of operation. A ``Subscriber`` is one SSE connection: httptools reads the
response head and its chunked framing, sse_fast's parser the events. Each event goes
through the process's shared ``Reading`` (``_event_reading.py``): an event of a name that does
not count is skipped; one that counts gives its publish time, sequence number and
publisher (its ``Stamp``), or is counted ``unstamped``. An event stamped before the run
began (a server replaying what it kept to a new subscriber) is counted ``before_run``
and nothing else. From the stamp the subscriber counts the event received (when
published in the measured window), lost (a gap in its publisher's sequence numbers) or
duplicated, and its latency; a number an event lists as unanswered (``u``) that the
stream had received counts as ``delivered_unanswered``. A subscriber that ``drains``
(all but a sample of the streams when a run reads only every n-th) takes its body in
and counts its bytes, nothing more: the sample's latency is then the server's, not
that of a client reading thousands of streams on the same cores.

Each subscriber keeps the clock of its own request (``requested_at``, the moment the
request was written): the response head gives its connect time, the first event that
counts its time to first event. A subscriber that replaces a dropped one (a reconnect)
carries its sequence numbers (unless they start again per stream), its last event id
and its first event over, and its clock is -1: its connect is not timed again.
``subscribe_all`` connects many at once, ``connect_one`` one (the client processes'
reconnects); the client processes are in ``_clients.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from typing import Any

try:
    import httptools
except ImportError:  # pragma: no cover - a run refuses to start without it (_run.py)
    httptools = None  # type: ignore[assignment]

import orjson

from .._compression import StreamDecoder
from .._core import Parser
from ..loadtarget import Stamps
from ..protocol import COME_BACK_HEADER
from ._event_reading import Reading
from ._stats import ProcessStats, count_into, failure_name

__all__ = [
    "Subscriber",
    "bound_socket",
    "connect_one",
    "subscribe_all",
]

#: how events are read when a run says nothing else: ``t``, ``s``, ``w`` in JSON data
DEFAULT_READING = Reading(Stamps())
#: the header of a server's answer telling the client to come back later (not a stream)
COME_BACK_NAME = COME_BACK_HEADER.lower().encode()
COME_BACK_LENGTH = len(COME_BACK_NAME)


class Subscriber(asyncio.Protocol):
    """One SSE connection parsed incrementally in ``data_received``.

    ``reading`` says which events count and where their stamps are (default: what the
    load tools publish); ``on_lost(subscriber)`` is called when the server ends a stream
    that was open (not one we dropped); ``index`` is the subscriber's number in its
    client process."""

    __slots__ = (
        "back_at",
        "closed",
        "come_back",
        "connected",
        "decoder",
        "delivered",
        "drains",
        "dropped",
        "first_event_at",
        "first_seq",
        "http",
        "index",
        "judged",
        "last_id",
        "last_seq",
        "lost_how",
        "on_lost",
        "parser",
        "reading",
        "requested_at",
        "slow",
        "stats",
        "status",
        "transport",
        "unreadable",
    )

    def __init__(
        self,
        stats: ProcessStats,
        slow: bool = False,
        reading: Reading = DEFAULT_READING,
        on_lost: Callable[[Subscriber], None] | None = None,
        index: int = 0,
        drains: bool = False,
    ) -> None:
        self.stats = stats
        #: takes its body in and counts its bytes, reading no event (``read_every``)
        self.drains = drains
        self.slow = slow  # latencies go to stats.slow_histogram (see run_load slow_every)
        self.reading = reading
        self.on_lost = on_lost
        self.index = index
        self.dropped = False  # closed by us (reconnect storm, exit): not counted as closed
        self.first_event_at = 0.0  # wall time of the first event that counts
        self.requested_at = 0.0  # wall time the request was written (-1: a reconnect, untimed)
        self.last_id = ""  # the SSE last event id, sent back as Last-Event-ID
        self.status = 0
        # the response head and its chunked framing: httptools calls on_headers_complete
        # and on_body (the de-chunked body) from feed_data
        self.http = httptools.HttpResponseParser(self)
        self.parser = Parser()
        self.last_seq: dict[object, int] = {}  # per publisher
        self.first_seq: dict[object, int] = {}  # per publisher: the first number seen
        #: per publisher: the unanswered numbers already judged (``_judge_unanswered``)
        self.judged: dict[object, set[int]] = {}
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.delivered = False  # a stamped event came on this connection
        #: a stream the server ended, reconnecting: counted back (``reconnects_on_close``)
        #: when its answer is a 200, at this wall time; 0.0 for any other connection
        self.back_at = 0.0
        #: how the connection ended: "closed" (by the peer, or by us), "reset", or the error
        self.lost_how = ""
        #: the reason of an answer telling the client to come back later (sse_fast's
        #: ``SSE-Fast-Come-Back`` header: a 200 with no stream), else ""
        self.come_back = ""
        #: the response's Content-Encoding until its head is read, then its decoder
        #: (None: identity)
        self.decoder: Any = None
        #: why a response could not be read (a Content-Encoding it cannot decode): no
        #: stream, counted as a failed connect with this reason; "" for the others
        self.unreadable = ""

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
        except httptools.HttpParserError as exc:
            self.stats.foreign += 1  # not HTTP: the stream is over
            self.lost_how = f"not HTTP ({type(exc).__name__})"
            if self.transport is not None:
                self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep the reason of an answer telling the client to come back later."""
        if len(name) == COME_BACK_LENGTH and name.lower() == COME_BACK_NAME:
            self.come_back = value.decode("latin-1")
        elif len(name) == 16 and name.lower() == b"content-encoding":
            self.decoder = value.decode("latin-1").strip().lower()

    def on_headers_complete(self) -> None:
        """The response head is read: its connect time counted, ``connected`` resolved with the
        status."""
        self.status = self.http.get_status_code()
        coding = self.decoder
        if self.status == 200:
            count_into(self.stats.codings, coding or "identity")
        if coding is not None and coding != "identity":
            try:
                self.decoder = StreamDecoder(coding)
            except ValueError as exc:  # a coding it cannot read: no stream to count
                self.unreadable = str(exc)
                self.decoder = None
        else:
            self.decoder = None
        if self.requested_at > 0:
            self.stats.connect_time.add(time.time() - self.requested_at)
        elif self.back_at and self.status == 200:
            # back from here, as a browser's EventSource is open from here: counted in
            # this callback, not by the task that connected it, which runs later (seconds
            # later when a storm of reconnects starves this process of CPU)
            self.back_at = time.time()
            self.stats.reconnects_on_close += 1
        if not self.connected.done():
            self.connected.set_result(self.status)

    def on_message_complete(self) -> None:
        """The response ended (its last chunk) with the connection still open: for a
        stream, the server ended it, as a browser sees it (``EventSource`` reconnects
        after ``retry`` from here, not when the connection closes, which a server may
        keep open for its next request). Counted and told as a close, then closed."""
        if self.status != 200 or self.closed:
            return
        self.closed = True
        self.lost_how = "ended"
        self.stats.closed += 1
        if self.back_at and not self.delivered:
            # a reconnect answered with an end and no event (a server starting or
            # draining telling it when to come back): not back yet
            self.stats.reconnects_on_close -= 1
            self.stats.come_backs += 1
        self.dropped = True  # closed here: connection_lost does not count it again
        if self.transport is not None:
            self.transport.close()
        if self.on_lost is not None:
            self.on_lost(self)

    def on_body(self, data: bytes) -> None:
        """Parse the (de-chunked) body of a 200 response: count each event that counts as
        received, duplicated, lost or unstamped, and its latency when measuring."""
        if self.status != 200 or self.unreadable:
            return
        stats = self.stats
        if self.drains:  # not of the sample that reads its events: the bytes only
            if stats.measuring:
                stats.drained_bytes += len(data)
            return
        if stats.measuring:
            stats.wire_bytes += len(data)
        if self.decoder is not None:
            try:
                data = self.decoder.feed(data)
            except Exception as exc:  # zlib.error, ZstdError: not of the coding
                stats.foreign += 1  # what came is not a stream: it is over
                self.lost_how = f"undecodable body ({type(exc).__name__}: {exc})"
                self.status = 0
                if self.transport is not None:
                    self.transport.close()
                return
        if stats.measuring:
            stats.decoded_bytes += len(data)
        reading = self.reading
        now = time.time()
        for event in self.parser.feed(data):
            if event.id:
                self.last_id = event.id
            if reading.events and (event.event or "message") not in reading.events:
                continue  # not an event that counts (e.g. a "joined" notice)
            keys = reading.keys
            if keys is not None:  # the hot path: reading.flat, inline
                try:
                    body = loads(event.data)
                    sent_at = body.get(keys[0])
                    seq = body.get(keys[1])
                    source = body.get(keys[2])
                except (decode_error, AttributeError):
                    stats.foreign += 1
                    continue
                if sent_at.__class__ is not float:
                    sent_at = sent_at if sent_at.__class__ is int else None
                if seq.__class__ is not int:
                    seq = None
                    if sent_at is None:
                        stats.foreign += 1
                        continue
                if source.__class__ is dict or source.__class__ is list:
                    source = orjson.dumps(source).decode()
            else:
                stamp = reading.read(event.event, event.data)
                if stamp is None:
                    stats.foreign += 1  # counts, but has no stamp where the paths point
                    continue
                sent_at, seq, source = stamp
            if sent_at is not None and sent_at < stats.run_began:
                stats.before_run += 1  # sent before this run (a server's replayed buffer)
                continue
            if not self.first_event_at:
                self.first_event_at = now
                if self.requested_at > 0:
                    stats.first_event.add(now - self.requested_at)
            stamped = now if sent_at is None else sent_at
            self.delivered = True
            stats.events_read += 1
            in_window = stats.measure_from <= stamped < stats.measure_until
            if in_window:
                stats.received += 1
            if seq is not None:
                last = self.last_seq.get(source, -1)
                if last < 0:
                    self.first_seq[source] = seq
                excused = body.get("u") if keys is not None else None
                if excused.__class__ is list:
                    self._judge_unanswered(source, excused, last, in_window)
                if seq <= last:
                    stats.duplicates += 1
                else:
                    if last >= 0 and seq != last + 1:
                        missing = seq - last - 1
                        if excused.__class__ is list:  # not those whose publish got no answer
                            missing -= sum(1 for u in excused if last < u < seq)
                        stats.lost += missing
                    self.last_seq[source] = seq
            if stats.measuring and in_window and sent_at is not None:
                if self.slow:
                    stats.slow_histogram.add(now - sent_at)
                    stats.slow_received += 1
                else:
                    stats.histogram.add(now - sent_at)
                    stats.measured += 1

    def _judge_unanswered(
        self, source: object, unanswered: list[int], last: int, in_window: bool
    ) -> None:
        """The publisher lists the sequence numbers whose publish got no answer: each one
        met here for the first time that this stream had received (between its first and
        its last) was delivered though never acknowledged (``delivered_unanswered``, in
        the window: the event listing it first comes right after it)."""
        judged = self.judged.setdefault(source, set())
        first = self.first_seq.get(source, last)
        for number in unanswered:
            if number not in judged:
                judged.add(number)
                if in_window and first <= number <= last:
                    self.stats.delivered_unanswered += 1

    def retry_seconds(self, default: float) -> float:
        """The reconnection time the stream asked for (its last ``retry:``), else ``default``."""
        retry = self.parser.retry
        return retry / 1000 if retry is not None else default

    def connection_lost(self, exc: Exception | None) -> None:
        """Count the connection as closed (unless we dropped it) and tell ``on_lost`` of a stream
        the server ended; ``connected`` resolves with 0 if it never got a response."""
        if self.closed and self.lost_how == "ended":  # the response's end told it already
            return
        self.closed = True
        if self.lost_how:  # closed by us, for the reason it says
            pass
        elif exc is None:
            self.lost_how = "closed"
        else:
            self.lost_how = "reset" if isinstance(exc, ConnectionResetError) else type(exc).__name__
        if not self.dropped:
            self.stats.closed += 1
            if self.on_lost is not None and self.status == 200:
                self.on_lost(self)
        if not self.connected.done():
            self.connected.set_result(0)


loads, decode_error = orjson.loads, orjson.JSONDecodeError
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source``; the port is picked at connect
    time (IP_BIND_ADDRESS_NO_PORT), which keeps bind() fast with many sockets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    try:
        sock.bind((source, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()  # not left to the collector: a reconnect may fail so again and again
        raise
    return sock


def _send_with_connect(sock: socket.socket, address: tuple[str, int], request: bytes) -> int | None:
    """Start connecting the non-blocking ``sock`` and send what of ``request`` fits at once:
    the bytes sent, or None while the handshake is still under way (then nothing was
    sent). A refused or failed connect raises its ``OSError``."""
    code = sock.connect_ex(address)
    if code not in (0, errno.EINPROGRESS):
        raise OSError(code, os.strerror(code))  # e.g. ConnectionRefusedError
    try:
        return sock.send(request)
    except (BlockingIOError, InterruptedError):
        return None


async def connect_one(
    address: tuple[str, int],
    path: str,
    source: str,
    stats: ProcessStats,
    make: Callable[[], Subscriber],
    extra: str = "",
    http_version: str = "1.1",
    slow: bool = False,
) -> Subscriber | None:
    """Connect one subscriber from ``source`` to ``address`` and send ``GET path`` with
    the ``extra`` header lines (each ending with CRLF); the subscriber once its answer is
    200, else None with the failure counted in ``stats``."""
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/{http_version}\r\nHost: {address[0]}\r\n"
        f"Accept: text/event-stream\r\n{extra}\r\n"
    ).encode()
    sock: socket.socket | None = None
    try:
        # a socket this process cannot have (EMFILE at its file limit, ENOBUFS) fails this
        # connect, counted by its name, and a reconnect tries again: raised, it would end
        # the reconnect loop without a word and the stream would never come back
        sock = bound_socket(source)
        if slow:  # a small receive buffer, set before the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, stats.slow_rcvbuf)
        # The request goes out with the handshake, as a browser's does: over loopback the
        # kernel has completed the handshake when connect() returns, so it is sent here,
        # in the same step. Awaiting the connect first would leave the connection silent
        # for as long as this process's loop takes to come back to it, seconds when a
        # storm of reconnects starves the clients of CPU, and a server that counts its
        # header timeout from the handshake would close it (a lag of the load generator's,
        # not of the server's).
        written_at = time.time()
        sent = _send_with_connect(sock, address, request)
        if sent is None:  # still connecting (not loopback): wait, then send all of it
            async with asyncio.timeout(15):
                await loop.sock_connect(sock, address)
            written_at, sent = time.time(), 0

        def made() -> Subscriber:  # timed before its answer can be read
            subscriber = make()
            if subscriber.requested_at == 0.0:  # not a reconnect (-1): the clock starts
                # at the request (in a storm, at the storm's start: until all are live)
                subscriber.requested_at = stats.first_event_from or written_at
            return subscriber

        _, protocol = await loop.create_connection(made, sock=sock)
        assert protocol.transport is not None
        if sent < len(request):
            protocol.transport.write(request[sent:])
        async with asyncio.timeout(15):
            status = await protocol.connected
        if status != 200 or protocol.unreadable or (protocol.come_back and not protocol.back_at):
            # a 200 that tells it to come back later is no stream (a reconnect of an
            # ended stream takes it as a browser does: back after its retry)
            if protocol.unreadable:
                why = protocol.unreadable
            elif not status:
                why = f"{protocol.lost_how} before any response"
            elif status != 200:
                why = f"HTTP {status}"
            else:
                why = f"told to come back ({protocol.come_back})"
            stats.connect_errors += 1
            count_into(stats.connect_failures, why)
            protocol.dropped = True
            protocol.transport.close()
            return None
        return protocol
    except (TimeoutError, OSError) as exc:
        stats.connect_errors += 1
        count_into(stats.connect_failures, failure_name(exc))
        if sock is not None:
            sock.close()
        return None


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
    ports = port if isinstance(port, list) else [port]
    subscribers: list[Subscriber] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, path: str) -> None:
        is_slow = slow is not None and slow(index)
        if make_subscriber is not None:
            make: Callable[[], Subscriber] = lambda: make_subscriber(index)  # noqa: E731
        else:
            make = lambda: Subscriber(stats, slow=is_slow)  # noqa: E731
        async with gate:
            subscriber = await connect_one(
                (host, ports[index % len(ports)]),
                path,
                sources[index % len(sources)],
                stats,
                make,
                extra_headers(index) if extra_headers is not None else "",
                http_version,
                is_slow,
            )
        if subscriber is not None:
            subscribers.append(subscriber)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    return subscribers
