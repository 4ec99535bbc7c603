"""sse-starlette's ``sse_starlette.sse``: ``EventSourceResponse`` and what goes with
it (the theory of operation is in ``sse_fast/starlette/__init__.py``).

sse-starlette's seams
---------------------
sse-starlette's own tests, and code written against it, replace two things to
drive a response: ``EventSourceResponse._listen_for_exit_signal`` (a shutdown
comes when it returns) and this module's ``anyio`` (``anyio.sleep`` paces the
pings). They are here, and a replacement changes what a stream does as it does
under sse-starlette. A stream looks at them once, when it starts
(``EventSourceResponse._replaced_seams``): left as they are, it does their work
itself (the registry of open streams; a timer per ping), at no cost per event;
replaced, it awaits the replacement in a task beside its own, the exit listener
(its return is a shutdown) or ``_ping`` (which looks ``anyio.sleep`` up here at
every ping; replacing ``_ping`` works too). The ping loop then sends on
sse-starlette's schedule (``ping_when_idle`` is the timer's), in order with the
other writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import anyio  # sse-starlette's seam: its tests patch sse_starlette.sse.anyio.sleep
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .._adapters.items import JSONServerSentEvent, ServerSentEvent, ensure_bytes
from ..frames import line_end
from ._control import (
    AppStatus,
    SendTimeoutError,
    open_streams,
    shutdown_streams,
    wait_for_exit,
)
from ._stream import _ping_bytes, _Stream

__all__ = [
    "AppStatus",
    "EventSourceResponse",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "ServerSentEvent",
    "ensure_bytes",
    "last_event_id",
    "open_streams",
    "shutdown_streams",
]


def last_event_id(connection: HTTPConnection | Scope) -> str | None:
    """The ``Last-Event-ID`` a reconnecting client sent (decoded as UTF-8, bytes that
    are not UTF-8 replaced), or None."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            return bytes(value).decode("utf-8", "replace")
    return None


class _Event(Protocol):
    def set(self) -> Any: ...


Content = AsyncIterable[Any] | Iterable[Any]


class EventSourceResponse(Response):
    """A Server-Sent Events response (see the package docstring); the arguments of
    sse-starlette's ``EventSourceResponse``, and three of ours, keyword only:

    * ``coalesce`` (False): items the generator has ready at once go out in one
      write, and while the event loop is saturated events close together are
      held for ``busy_batch_delay`` seconds (0.05; None: never held) and go out
      together; the generator is asked for the next item before a write is done.
    * ``ping_when_idle`` (False): a ping only after ``ping`` seconds without a
      write, instead of every ``ping`` seconds.
    * ``busy_batch_delay``: see ``coalesce``.
    * ``compress`` (False): compress the stream when the request's
      ``Accept-Encoding`` asks (zstd, gzip or deflate), every write flushed so each
      event arrives as it is sent (``sse_fast.compression.CompressedSend``), with
      ``Vary: Accept-Encoding``. Off, the bytes are sse-starlette's.
    """

    DEFAULT_PING_INTERVAL = 15
    DEFAULT_SEPARATOR = "\r\n"
    DEFAULT_CLEANUP_TIMEOUT = 30.0
    DEFAULT_BUSY_BATCH_DELAY = 0.05

    def __init__(
        self,
        content: Content,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str = "text/event-stream",
        background: BackgroundTask | None = None,
        ping: float | None = None,
        sep: str | None = None,
        ping_message_factory: Callable[[], Any] | None = None,
        data_sender_callable: Callable[[], Awaitable[None]] | None = None,
        send_timeout: float | None = None,
        client_close_handler_callable: Callable[[Message], Awaitable[None]] | None = None,
        shutdown_event: _Event | None = None,
        shutdown_grace_period: float = 0,
        cleanup_timeout: float | None = DEFAULT_CLEANUP_TIMEOUT,
        *,
        coalesce: bool = False,
        busy_batch_delay: float | None = DEFAULT_BUSY_BATCH_DELAY,
        ping_when_idle: bool = False,
        compress: bool = False,
    ) -> None:
        self.sep = line_end(sep, self.DEFAULT_SEPARATOR)
        self.compress = compress
        if isinstance(content, AsyncIterable):
            self.body_iterator: AsyncIterable[Any] = content
        else:  # wrapped as it is: iterated (in a thread) only when the response runs
            self.body_iterator = iterate_in_threadpool(content)
        self.status_code = status_code
        self.media_type = media_type if media_type is not None else "text/event-stream"
        self.background = background
        self.data_sender_callable = data_sender_callable
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError("send_timeout must be > 0 seconds (or None: no limit)")
        self.send_timeout = send_timeout
        merged = MutableHeaders()
        if headers is not None:
            merged.update(headers)
        merged.setdefault("Cache-Control", "no-store")
        merged["Connection"] = "keep-alive"  # dropped on HTTP/2 and HTTP/3 (forbidden there)
        merged["X-Accel-Buffering"] = "no"
        self.init_headers(merged)
        self.ping_interval = self.DEFAULT_PING_INTERVAL if ping is None else ping
        self.ping_message_factory = ping_message_factory
        self.client_close_handler_callable = client_close_handler_callable
        if shutdown_grace_period < 0:
            raise ValueError("shutdown_grace_period must be >= 0")
        self._shutdown_event = shutdown_event
        self._shutdown_grace_period = shutdown_grace_period
        if cleanup_timeout is not None and cleanup_timeout < 0:
            raise ValueError("cleanup_timeout must be >= 0")
        self._cleanup_timeout = cleanup_timeout
        if busy_batch_delay is not None and not 0 < busy_batch_delay <= 1:
            raise ValueError(
                "busy_batch_delay must be > 0 and <= 1 second (or None: never hold an event)"
            )
        self.coalesce = coalesce
        self.busy_batch_delay = busy_batch_delay
        self.ping_when_idle = ping_when_idle
        self.active = True

    @property
    def ping_interval(self) -> float:
        """Seconds between keep-alive pings (0: none); setting it checks the value (``TypeError``,
        ``ValueError``)."""
        return self._ping_interval

    @ping_interval.setter
    def ping_interval(self, value: float) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError("ping interval must be int or float")
        if value < 0:
            raise ValueError("ping interval must be >= 0 (0 disables ping)")
        self._ping_interval = value

    def enable_compression(self, force: bool = False) -> None:
        """Not supported: an event stream is never compressed (``NotImplementedError``)."""
        raise NotImplementedError("Compression is not supported for SSE streams.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            send = _websocket_denial(send)
        if scope["type"] == "http" and scope.get("method", "GET").upper() == "HEAD":
            await self._head(scope, send)
        else:
            if self.compress and scope["type"] == "http":
                # imported here: a response that does not compress loads nothing of it
                from ..compression import CompressedSend, StreamCompressor, accept_encoding

                asked = accept_encoding(scope.get("headers", ()))
                send = CompressedSend(send, StreamCompressor.negotiate(asked))
            await _Stream(self, scope, receive, send).run(*self._replaced_seams())
        if self.background is not None:
            await self.background()

    async def _head(self, scope: Scope, send: Send) -> None:
        """Headers and an empty body, each within ``send_timeout``: an endless
        stream must not start on HEAD."""
        start = {"type": "http.response.start", "status": self.status_code}
        await self._send_with_timeout(send, {**start, "headers": self._headers_for(scope)})
        await self._send_with_timeout(
            send, {"type": "http.response.body", "body": b"", "more_body": False}
        )

    # ------------------------------------------------ sse-starlette's seams

    @staticmethod
    async def _listen_for_exit_signal() -> None:
        """sse-starlette's seam: returns when the server shuts down (see "Shutdown"),
        at once if it already is. A stream awaits it only when it was replaced (on
        the response, or in a subclass); then only its return ends the stream on a
        shutdown, as under sse-starlette."""
        await wait_for_exit()

    async def _ping(self, send: Send) -> None:
        """sse-starlette's ping loop: while the response is active, sleep ``ping``
        seconds (``anyio.sleep``, looked up on this module at every ping) and send
        a ping with ``send`` within ``send_timeout`` (``SendTimeoutError``). A
        stream runs it only when it or ``anyio.sleep`` was replaced; it keeps a
        timer otherwise."""
        while self.active:
            await anyio.sleep(self._ping_interval)
            chunk = _ping_bytes(self)
            if chunk is not None and self.active:
                message = {"type": "http.response.body", "body": chunk, "more_body": True}
                await self._send_with_timeout(send, message)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """``send(message)`` within ``send_timeout`` (``SendTimeoutError``)."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None

    def _replaced_seams(
        self,
    ) -> tuple[Callable[[], Awaitable[None]] | None, Callable[[Send], Awaitable[None]] | None]:
        """The exit listener and the ping loop a stream must await, each None when
        left as it is (the stream then does its work itself): looked up once per
        stream, never per event."""
        listen = self._listen_for_exit_signal
        ping = self._ping
        return (
            None if listen is _LISTEN_FOR_EXIT_SIGNAL else listen,
            None
            if getattr(ping, "__func__", None) is _PING and anyio.sleep is _ANYIO_SLEEP
            else ping,
        )

    def _headers_for(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        if scope.get("http_version", "1.1") in ("2", "3"):
            return [(k, v) for k, v in self.raw_headers if k != b"connection"]
        return self.raw_headers


#: the seams as they are, against which a stream compares them (``_replaced_seams``)
_LISTEN_FOR_EXIT_SIGNAL = EventSourceResponse._listen_for_exit_signal
_PING = EventSourceResponse._ping
_ANYIO_SLEEP = anyio.sleep


def _websocket_denial(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] in ("http.response.start", "http.response.body"):
            message = {**message, "type": "websocket." + message["type"]}
        await send(message)

    return wrapped
