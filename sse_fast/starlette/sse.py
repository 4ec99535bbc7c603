"""sse-starlette's ``sse_starlette.sse``: ``EventSourceResponse`` and what goes with
it (the theory of operation is in ``sse_fast/starlette/__init__.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .._adapters.items import JSONServerSentEvent, ServerSentEvent, ensure_bytes
from .._tasks import within
from ..frames import line_end
from ._control import AppStatus, SendTimeoutError, open_streams, shutdown_streams
from ._stream import _Stream

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
    ) -> None:
        self.sep = line_end(sep, self.DEFAULT_SEPARATOR)
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
            await _Stream(self, scope, receive, send).run()
        if self.background is not None:
            await self.background()

    async def _head(self, scope: Scope, send: Send) -> None:
        """Headers and an empty body, each within ``send_timeout``: an endless
        stream must not start on HEAD."""
        start = {"type": "http.response.start", "status": self.status_code}
        messages = [
            {**start, "headers": self._headers_for(scope)},
            {"type": "http.response.body", "body": b"", "more_body": False},
        ]
        for message in messages:
            try:
                await within(send(message), self.send_timeout)
            except TimeoutError:
                raise SendTimeoutError() from None

    def _headers_for(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        if scope.get("http_version", "1.1") in ("2", "3"):
            return [(k, v) for k, v in self.raw_headers if k != b"connection"]
        return self.raw_headers


def _websocket_denial(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] in ("http.response.start", "http.response.body"):
            message = {**message, "type": "websocket." + message["type"]}
        await send(message)

    return wrapped
