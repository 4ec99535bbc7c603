"""An SSE client that reconnects, on httpx: ``connect`` (asyncio) and ``connect_sync``.

Theory of operation
===================

Connecting. ``GET url`` with ``Accept: text/event-stream``, one ``topic`` query
parameter per topic (sse_fast's way of choosing topics; leave ``topics`` empty
for any other server) and ``Last-Event-ID`` once an id is known. A ``200`` with
``Content-Type: text/event-stream`` is a stream; its bytes go through
sse_fast's incremental parser (the native one when built), which keeps the last
id and the server's ``retry`` as the EventSource spec says.

Events. Each dispatched event is a ``ReceivedEvent`` (``event``, ``data``, ``id``,
``retry``). sse_fast's own announcements are typed: ``Missed``
(``sse-fast-missed``: the server could not resume, events were lost, with its
``reason``) and ``Disconnect`` (``sse-fast-disconnect``: the server is ending the
stream, with its ``reason``: ``draining``, ``lagged``, ...). Both are yielded in
their place among the events; a loop that does not care may ignore them.

Reconnecting. When the stream ends or breaks (the server closed it, a network
error, no byte for ``read_timeout`` seconds: sse_fast sends a heartbeat every
15 s by default), the client waits and reconnects with ``Last-Event-ID``, so
the server resumes after the last event received: nothing is repeated. The
wait is the server's ``retry`` (or ``retry`` given here) for the first attempt,
doubled for each further failed attempt up to ``max_delay``, each wait drawn
from its upper half at random (jitter, so that a thousand clients cut at
once do not come back at once). A ``Retry-After`` on a 429/503 is honoured as
the least wait. The count of failed attempts starts again once a connection
delivers an event. ``max_reconnects`` (default: no limit, as a browser) bounds
the attempts in a row; past it ``GaveUp`` is raised with the last cause.

What is not retried. A status or content type that says retrying cannot help
(401, 403, 404, 400 ..., or a 200 that is not an event stream) raises
``StreamRefused`` with the status, headers and body: the caller must change
something. ``204 No Content`` is the spec's "stop reconnecting": iteration ends.
408, 425, 429, 500, 502, 503 and 504 are retried (``RETRIED_STATUSES``); other
statuses raise ``StreamRefused``.

Closing. ``async with connect(...) as events`` (``with connect_sync(...)``) or
``aclose()`` / ``close()`` end the stream and, when the client made its own
``httpx`` client, that too; iteration then stops. A client passed in
(``client=``: proxies, TLS, HTTP/2, auth) is left open for its owner.

Cost. The ``httpx`` clients made here share one verifying TLS context, made at
the first stream as httpx makes its own (certifi's bundle, or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR``): httpx would load the CA bundle again for every client, about
25 ms of CPU, most of what opening a stream cost (200 streams: 4.9 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, cast

import orjson

try:
    import httpx
except ImportError as exc:  # pragma: no cover - the client extra brings it
    raise ImportError(
        "sse_fast.client needs httpx: python -m pip install 'sse_fast[client]'"
    ) from exc

from ._core import ParsedEvent, ParseError, Parser
from .protocol import MISSED, read_control

__all__ = [
    "BadStream",
    "ClientError",
    "Disconnect",
    "Event",
    "EventStream",
    "GaveUp",
    "Missed",
    "ReceivedEvent",
    "StreamRefused",
    "SyncEventStream",
    "connect",
    "connect_sync",
]

log = logging.getLogger("sse_fast.client")

#: the most of a refusal's body kept for its error (``StreamRefused.body``)
BODY_SHOWN = 64 * 1024
#: the longest ``Retry-After`` honoured (seconds)
RETRY_AFTER_MAX = 86400.0
#: statuses after which a later attempt may succeed
RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ReceivedEvent:
    """One event as the EventSource spec dispatches it: ``event`` is
    ``"message"`` when the stream named none, ``id`` the last event id (it
    carries over events without one), ``retry`` the ``retry`` field sent with
    this event (ms) or None."""

    event: str
    data: str
    id: str
    retry: int | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (raises ``orjson.JSONDecodeError``)."""
        return orjson.loads(self.data)


@dataclass(frozen=True)
class Missed(ReceivedEvent):
    """``sse-fast-missed``: events before this one could not be delivered
    (``reason``: ``evicted``, ``unknown``, ``relay-restarted``, ``redis-restarted``
    ...; ``last_event_id``: the id the server could not resume from, if any).
    What follows is complete again."""

    reason: str = ""
    last_event_id: str | None = None


@dataclass(frozen=True)
class Disconnect(ReceivedEvent):
    """``sse-fast-disconnect``: the server ends this stream (``reason``:
    ``draining``, ``lagged``, ...; ``details``: the rest of what it said). The
    client reconnects after it, as after any end of stream."""

    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


#: the name ``ReceivedEvent`` had before 0.2 (``sse_fast.Event`` is an event to send)
Event = ReceivedEvent


class ClientError(Exception):
    """Base of the errors this client raises."""


class StreamRefused(ClientError):
    """The server answered with something retrying cannot fix."""

    def __init__(self, url: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        kind = headers.get("content-type", "no content type")
        reason = (
            f"HTTP {status}"
            if status != 200
            else f"HTTP 200 with {kind}, not text/event-stream (is this an SSE endpoint?)"
        )
        text = body[:300].decode("utf-8", "replace").strip()
        super().__init__(f"GET {url}: {reason}" + (f": {text}" if text else ""))
        self.status = status
        self.headers = dict(headers)
        self.body = body


class BadStream(ClientError):
    """The stream broke the SSE rules or a limit of ours (an event larger than
    ``max_event_size``); not retried: resuming would reach the same event."""


class GaveUp(ClientError):
    """``max_reconnects`` attempts in a row failed; ``__cause__`` is the last."""


def _typed(parsed: ParsedEvent) -> ReceivedEvent:
    kind = parsed.event or "message"
    control = read_control(kind, parsed.data)
    if control is None:
        return ReceivedEvent(kind, parsed.data, parsed.id, parsed.retry)
    if control.kind == MISSED:
        return Missed(
            kind, parsed.data, parsed.id, parsed.retry, control.reason, control.last_event_id
        )
    return Disconnect(
        kind, parsed.data, parsed.id, parsed.retry, control.reason, dict(control.details)
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(0.0, float(value)), RETRY_AFTER_MAX)
    except (ValueError, OverflowError):
        pass
    try:
        return min(
            max(0.0, parsedate_to_datetime(value).timestamp() - time.time()), RETRY_AFTER_MAX
        )
    except (TypeError, ValueError):
        return None


class _Session:
    """What both loops share: the request to make, the answer's meaning, the
    wait before the next attempt, the parser (no I/O here)."""

    def __init__(
        self,
        url: str,
        topics: Sequence[str],
        headers: Mapping[str, str] | None,
        last_event_id: str,
        retry: float,
        max_delay: float,
        max_reconnects: int | None,
        max_event_size: int,
    ) -> None:
        if isinstance(topics, str):
            raise TypeError("topics must be a list of topic names, not one string")
        if retry < 0 or max_delay <= 0:
            raise ValueError("retry must be >= 0 and max_delay > 0 (seconds)")
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError("max_reconnects must be >= 0 or None (no limit)")
        self.url = url
        # topics join the URL's own query (httpx's params= would replace it)
        self.target = httpx.URL(url)
        if topics:
            self.target = self.target.copy_merge_params([("topic", t) for t in topics])
        self.headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        self.headers.update(headers or {})
        self.last_event_id = last_event_id
        self.retry = retry  # seconds; the server's retry field replaces it
        self.max_delay = max_delay
        self.max_reconnects = max_reconnects
        self.max_event_size = max_event_size
        self.failures = 0  # attempts in a row that delivered no event
        self.reconnects = 0
        self.least_wait = 0.0  # a Retry-After
        self.stop = False  # 204: the server asked us not to reconnect
        self.opened_at: float | None = None
        self.broken: BadStream | None = None
        self.parser = Parser(max_event_size=max_event_size, last_event_id=last_event_id)

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def opened(self, response: httpx.Response, body: bytes = b"") -> bool:
        """True when ``response`` is a stream; False for a retried status or a 204
        (``stop``). Raises ``StreamRefused`` for the rest, with ``body``: the caller
        reads the start of it first (when not ``is_stream``)."""
        self.least_wait = 0.0
        if response.status_code == 204:
            self.stop = True
            return False
        if response.status_code in RETRIED_STATUSES:
            self.least_wait = _retry_after(response.headers) or 0.0
            return False
        if self.is_stream(response):
            self.parser = Parser(
                max_event_size=self.max_event_size, last_event_id=self.last_event_id
            )
            self.opened_at = time.monotonic()
            return True
        raise StreamRefused(self.url, response.status_code, response.headers, body)

    @staticmethod
    def is_stream(response: httpx.Response) -> bool:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return response.status_code == 200 and kind == "text/event-stream"

    def feed(self, chunk: bytes) -> list[ReceivedEvent]:
        """The events ``chunk`` completes. A stream that breaks the rules (an event
        larger than ``max_event_size``) sets ``broken``: the events before it are
        still given, then ``BadStream`` is raised (a reconnect would only resume
        into the same event)."""
        try:
            parsed = self.parser.feed(chunk)
        except ParseError as exc:
            parsed = list(getattr(exc, "events", ()))
            self.broken = BadStream(f"GET {self.url}: {exc}")
        if self.parser.retry is not None:
            self.retry = self.parser.retry / 1000
        self.last_event_id = self.parser.last_event_id
        if not parsed:
            return []
        self.failures = 0
        return [_typed(p) for p in parsed]

    def next_wait(self, cause: BaseException | str) -> float:
        """The wait before the next attempt (raises ``GaveUp`` past the limit)."""
        if self.opened_at is not None and time.monotonic() - self.opened_at >= self.max_delay:
            self.failures = 0  # a stream that lasted is not a failure, events or not
        self.opened_at = None
        self.failures += 1
        if self.max_reconnects is not None and self.failures > self.max_reconnects:
            error = cause if isinstance(cause, BaseException) else ClientError(cause)
            raise GaveUp(
                f"GET {self.url}: {self.max_reconnects} reconnects in a row failed; last: {error}"
            ) from error
        delay = min(self.max_delay, self.retry * 2 ** (self.failures - 1))
        wait = max(self.least_wait, random.uniform(delay / 2, delay))
        self.reconnects += 1
        log.info("%s: %s; reconnecting in %.2f s", self.url, cause, wait)
        return wait


def _timeout(read_timeout: float | None, connect_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(connect_timeout, read=read_timeout, write=connect_timeout, pool=None)


_CONNECTION_ERRORS = (httpx.TransportError, httpx.StreamError)

#: the TLS context of every httpx client made here (see "Cost"); None until the first
_tls: ssl.SSLContext | None = None


def _shared_tls() -> ssl.SSLContext:
    """The verifying TLS context the clients made here share (two threads that race
    at the first stream make one each: harmless)."""
    global _tls
    if _tls is None:
        _tls = httpx.create_ssl_context()
    return _tls


class _Stream:
    """What the asyncio and the sync stream share: the session's figures."""

    def __init__(self, session: _Session, timeout: httpx.Timeout, owns_client: bool) -> None:
        self._session = session
        self._timeout = timeout
        self._owns_client = owns_client
        self._response: httpx.Response | None = None
        self._closed = False

    @property
    def last_event_id(self) -> str:
        """The id a reconnect resumes from."""
        return self._session.last_event_id

    @property
    def retry(self) -> float:
        """The base wait before reconnecting (seconds; the server's ``retry``)."""
        return self._session.retry

    @property
    def reconnects(self) -> int:
        """Reconnects so far."""
        return self._session.reconnects

    @property
    def connected(self) -> bool:
        return self._response is not None


class EventStream(_Stream):
    """Events from ``url``, reconnecting: ``async for event in stream``. Made by
    ``connect``; see the module's theory of operation."""

    def __init__(self, session: _Session, client: httpx.AsyncClient | None, timeout: httpx.Timeout):
        super().__init__(session, timeout, client is None)
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=True, verify=_shared_tls()
        )
        self._closing = asyncio.Event()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[ReceivedEvent]:
        return self._events()

    async def aclose(self) -> None:
        """End the stream (and the httpx client this stream made)."""
        self._closed = True
        self._closing.set()
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()
        if self._owns_client:
            await self._client.aclose()

    async def _events(self) -> AsyncIterator[ReceivedEvent]:
        session = self._session
        while not self._closed:
            cause: BaseException | str
            try:
                async with self._client.stream(
                    "GET",
                    session.target,
                    headers=session.request_headers(),
                    timeout=self._timeout,
                ) as response:
                    body = b""
                    # httpx's iterators closed where reading stops (left to the garbage
                    # collector, their aclose() may find the loop closed)
                    if not session.is_stream(response):
                        async with contextlib.aclosing(_async_chunks(response)) as parts:
                            async for part in parts:  # its first 64 KiB
                                body += part
                                if len(body) >= BODY_SHOWN:
                                    break
                    if session.opened(response, body[:BODY_SHOWN]):
                        self._response = response
                        if self._closed:
                            return
                        async with contextlib.aclosing(_async_chunks(response)) as chunks:
                            async for chunk in chunks:
                                for event in session.feed(chunk):
                                    yield event
                                if session.broken is not None:
                                    raise session.broken
                        cause = "the server ended the stream"
                    else:
                        cause = f"HTTP {response.status_code}"
            except _CONNECTION_ERRORS as exc:
                if self._closed:
                    return
                cause = exc
            except RuntimeError:  # httpx: "Cannot send a request, as the client has been closed."
                if self._closed:
                    return
                raise
            finally:
                self._response = None
            if self._closed or session.stop:
                return
            wait = session.next_wait(cause)
            with contextlib.suppress(asyncio.TimeoutError):  # woken early by aclose()
                async with asyncio.timeout(wait):
                    await self._closing.wait()


class SyncEventStream(_Stream):
    """``EventStream`` for synchronous code (``for event in stream``); made by
    ``connect_sync``."""

    def __init__(self, session: _Session, client: httpx.Client | None, timeout: httpx.Timeout):
        super().__init__(session, timeout, client is None)
        self._client = client or httpx.Client(
            timeout=timeout, follow_redirects=True, verify=_shared_tls()
        )
        self._closing = threading.Event()

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ReceivedEvent]:
        return self._events()

    def close(self) -> None:
        """End the stream (another thread may call it: the read in progress
        fails and iteration stops)."""
        self._closed = True
        self._closing.set()
        response, self._response = self._response, None
        if response is not None:
            _shut_down(response)  # a blocked recv() in another thread returns
            response.close()
        if self._owns_client:
            self._client.close()

    def _events(self) -> Iterator[ReceivedEvent]:
        session = self._session
        while not self._closed:
            cause: BaseException | str
            try:
                with self._client.stream(
                    "GET",
                    session.target,
                    headers=session.request_headers(),
                    timeout=self._timeout,
                ) as response:
                    body = b""
                    if not session.is_stream(response):
                        with contextlib.closing(_chunks(response)) as parts:
                            for part in parts:  # its first 64 KiB
                                body += part
                                if len(body) >= BODY_SHOWN:
                                    break
                    if session.opened(response, body[:BODY_SHOWN]):
                        self._response = response
                        if self._closed:  # close() came while we connected
                            return
                        with contextlib.closing(_chunks(response)) as chunks:
                            for chunk in chunks:
                                yield from session.feed(chunk)
                                if session.broken is not None:
                                    raise session.broken
                        cause = "the server ended the stream"
                    else:
                        cause = f"HTTP {response.status_code}"
            except _CONNECTION_ERRORS as exc:
                if self._closed:
                    return
                cause = exc
            except RuntimeError:  # httpx: "Cannot send a request, as the client has been closed."
                if self._closed:
                    return
                raise
            finally:
                self._response = None
            if self._closed or session.stop:
                return
            self._closing.wait(session.next_wait(cause))  # woken early by close()


def _shut_down(response: httpx.Response) -> None:
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def connect(
    url: str,
    topics: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    *,
    last_event_id: str = "",
    retry: float = 3.0,
    max_delay: float = 30.0,
    max_reconnects: int | None = None,
    read_timeout: float | None = 60.0,
    connect_timeout: float = 10.0,
    max_event_size: int = 1 << 20,
    client: httpx.AsyncClient | None = None,
) -> EventStream:
    """Events from an SSE endpoint, reconnecting with ``Last-Event-ID``::

        async with connect("http://127.0.0.1:8000/events", topics=["news"]) as events:
            async for event in events:
                if isinstance(event, Missed):
                    ...  # events were lost: refetch state
                else:
                    print(event.id, event.data)

    ``retry``: the first wait (s) until the server sends its own; ``max_delay``:
    the cap of the doubling waits; ``read_timeout``: seconds without a byte
    before the connection counts as lost (keep it above the server's heartbeat
    interval; None waits forever); ``client``: an ``httpx.AsyncClient`` of yours
    (proxies, TLS, HTTP/2), left open when the stream closes.
    """
    session = _Session(
        url, topics, headers, last_event_id, retry, max_delay, max_reconnects, max_event_size
    )
    return EventStream(session, client, _timeout(read_timeout, connect_timeout))


def connect_sync(
    url: str,
    topics: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    *,
    last_event_id: str = "",
    retry: float = 3.0,
    max_delay: float = 30.0,
    max_reconnects: int | None = None,
    read_timeout: float | None = 60.0,
    connect_timeout: float = 10.0,
    max_event_size: int = 1 << 20,
    client: httpx.Client | None = None,
) -> SyncEventStream:
    """``connect`` for synchronous code::

    with connect_sync("http://127.0.0.1:8000/events", topics=["news"]) as events:
        for event in events:
            print(event.id, event.data)
    """
    session = _Session(
        url, topics, headers, last_event_id, retry, max_delay, max_reconnects, max_event_size
    )
    return SyncEventStream(session, client, _timeout(read_timeout, connect_timeout))


def _async_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """httpx's byte iterator, typed as what it is: an async generator, which the
    reader closes where it stops (``contextlib.aclosing``)."""
    return cast("AsyncGenerator[bytes, None]", response.aiter_bytes())


def _chunks(response: httpx.Response) -> Generator[bytes, None, None]:
    """The same, for the blocking client (``contextlib.closing``)."""
    return cast("Generator[bytes, None, None]", response.iter_bytes())
