"""Server-Sent Events for Django under ASGI: an async streaming response.

    from sse_fast.django import EventSourceResponse, last_event_id

    async def orders(request):
        async def feed():
            async for order in watch_orders(after=last_event_id(request)):
                yield {"event": "order", "id": order.id, "data": order.as_json()}
        return EventSourceResponse(feed(), ping=15, send_timeout=30)

Theory of operation
-------------------
* What it is. ``EventSourceResponse`` is a ``StreamingHttpResponse`` whose
  content is an async generator of frames made by the native encoder, with the
  headers an event stream needs (``text/event-stream``, ``Cache-Control:
  no-store``, ``X-Accel-Buffering: no``; no ``Connection``, which Django's ASGI
  handler leaves to the server, so HTTP/2 is correct). It needs Django's ASGI
  handler (``_asgi.py``; tested with Django 5.2 under uvicorn, hypercorn and
  Granian): under WSGI a stream holds a worker thread for its whole life.
* Items and bytes, as ``sse_fast.starlette``'s (sse-starlette's field order and
  ``\\r\\n`` line ends; ``sep="\\n"`` for shorter ones): dicts with ``data``, ``event``, ``id``,
  ``retry``, ``comment``; ``ServerSentEvent``/``JSONServerSentEvent``; bytes (sent
  as they are); anything else is the data (its ``str()``). The content may be
  an async iterable or a sync iterable (each ``next()`` then runs in a thread:
  a sync generator may block).
* Pings. After ``ping`` seconds without a write a comment goes out (``: ping -
  <time>``, or ``ping_message_factory()``'s item): proxies keep the connection,
  and a client whose network vanished is found by the write that fails. The
  content is read in a task of its own (one step at a time), so a ping can be
  written while the generator waits.
* Disconnects. Django (from 5.0, by its release notes) watches ``receive()``
  for ``http.disconnect`` and cancels the request's task; the generator gets
  ``CancelledError`` where it waits, its ``finally`` runs, and the response
  ends. Nothing stays behind.
* Slow clients. A write that Django has not finished within ``send_timeout``
  seconds (a client that stopped reading: buffers full) ends the stream: the
  request's task is cancelled and, given ``request=``, the connection is reset
  (``sse_fast/_abort.py``). Pass the request: without the reset a server may
  keep the connection and the bytes queued for it after the stream ended
  (measured once: the cut tests of the three servers took 318 s without it,
  8 s with it).
  ``None`` (the default, as sse-starlette's) waits as long as the server does.
  A client whose network vanished (no FIN, no RST) is found the same way: with
  ``send_timeout`` and ``request=``, ``TCP_USER_TIMEOUT`` of that many seconds
  goes on the server's sockets (Linux, once per process), so the kernel drops
  the connection when a ping stays unacknowledged that long, and Django's
  disconnect watch ends the stream.
* Shutdown. SIGTERM/SIGINT (a handler chained in front of the server's), or
  ``shutdown_streams()``, end every open stream: ``shutdown_event`` is set, the
  generator has ``shutdown_grace_period`` seconds to finish, then the stream
  ends cleanly (its last chunk sent), so the server's own shutdown does not
  wait for clients.
* HEAD. Given ``request=``, a HEAD request gets the headers and an empty body
  (Django's handler would otherwise run the generator for a body nobody gets).
* ``last_event_id(request)`` is the ``Last-Event-ID`` header decoded as UTF-8
  (Django decodes headers as Latin-1), or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

try:
    from django.http import HttpRequest, StreamingHttpResponse
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("sse_fast.django needs Django: pip install 'sse_fast[django]'") from exc

from . import _shutdown
from ._abort import Aborter, connection_key, ensure_user_timeout
from ._adapters.items import JSONServerSentEvent, ServerSentEvent, ensure_bytes
from ._tasks import close_generator
from .frames import line_end

__all__ = [
    "EventSourceResponse",
    "JSONServerSentEvent",
    "ServerSentEvent",
    "last_event_id",
    "open_streams",
    "shutdown_streams",
]

log = logging.getLogger("sse_fast.django")


class _Event(Protocol):
    def set(self) -> Any: ...


def last_event_id(request: HttpRequest) -> str | None:
    """The ``Last-Event-ID`` a reconnecting client sent (UTF-8, bytes that are not
    UTF-8 replaced), or None."""
    value: str | None = request.headers.get("Last-Event-ID")
    if value is None:
        return None
    with contextlib.suppress(UnicodeEncodeError):
        return value.encode("latin-1").decode("utf-8", "replace")
    return value  # not from Latin-1 decoding (a test client): as given


def shutdown_streams() -> int:
    """End every open stream of this process (see "Shutdown"); returns how many.
    Safe from any thread and from a signal handler."""
    return _streams.stop_all()


def open_streams() -> int:
    """How many streams of this process are open now: what ``shutdown_streams()``
    would end (for a health page or a gauge)."""
    return len(_streams)


_DONE = object()


def _next_or_done(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


async def _threaded(iterable: Iterable[Any]) -> AsyncIterator[Any]:
    iterator = iter(iterable)
    while True:
        item = await asyncio.to_thread(_next_or_done, iterator)
        if item is _DONE:
            return
        yield item


async def _next(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _DONE


class EventSourceResponse(StreamingHttpResponse):
    """A Server-Sent Events response for Django under ASGI (see the module docstring)."""

    DEFAULT_PING_INTERVAL = 15.0
    #: the Starlette drop-in's (sse-starlette's): the same items give the same bytes in both
    DEFAULT_SEPARATOR = "\r\n"

    def __init__(
        self,
        content: AsyncIterable[Any] | Iterable[Any],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        ping: float | None = None,
        ping_message_factory: Callable[[], Any] | None = None,
        sep: str | None = None,
        send_timeout: float | None = None,
        shutdown_event: _Event | None = None,
        shutdown_grace_period: float = 0,
        cleanup_timeout: float = 30.0,
        request: HttpRequest | None = None,
    ) -> None:
        self.sep = line_end(sep, self.DEFAULT_SEPARATOR)
        self.ping_interval = self.DEFAULT_PING_INTERVAL if ping is None else ping
        if self.ping_interval < 0:
            raise ValueError("ping must be >= 0 seconds (0: no pings)")
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError("send_timeout must be > 0 seconds (or None: no limit)")
        if shutdown_grace_period < 0 or cleanup_timeout < 0:
            raise ValueError("shutdown_grace_period and cleanup_timeout must be >= 0")
        self.ping_message_factory = ping_message_factory
        self.send_timeout = send_timeout
        self.shutdown_event = shutdown_event
        self.shutdown_grace_period = shutdown_grace_period
        self.cleanup_timeout = cleanup_timeout
        #: a HEAD request gets the headers only: the generator is not started
        self.head = getattr(request, "method", None) == "HEAD"
        scope = getattr(request, "scope", None)
        self.scope: dict[str, Any] | None = scope if isinstance(scope, dict) else None
        self.connection = connection_key(self.scope) if self.scope is not None else None
        source = content if isinstance(content, AsyncIterable) else _threaded(content)
        self._stream = _Stream(self, source)
        super().__init__(
            streaming_content=self._stream.frames(),
            content_type="text/event-stream; charset=utf-8",
            status=status,
            headers=dict(headers or {}),
        )
        if "Cache-Control" not in self:
            self["Cache-Control"] = "no-store"
        self["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        # the frames themselves, not Django's wrappers around them: Django's handler
        # closes what this returns (``aclosing``) however the response ends, so the
        # generator's cleanup runs at once (a wrapped one waits for the garbage
        # collector: response and stream refer to each other)
        return self._iterator  # type: ignore[no-any-return]

    @property
    def stopped_by(self) -> str | None:
        """Why the stream ended early: ``shutdown``, ``send-timeout``, or None."""
        return self._stream.ended_by


class _Stream:
    """One response's frames (an async generator run by Django's ASGI handler)."""

    def __init__(self, response: EventSourceResponse, source: AsyncIterable[Any]) -> None:
        self.response = response
        self.source = source
        self.ended_by: str | None = None
        self.ending: asyncio.Future[None] | None = None  # resolved: end the stream
        self.loop: asyncio.AbstractEventLoop | None = None
        self.grace: asyncio.TimerHandle | None = None
        #: what the stream's task waits on between items (no asyncio.wait per item), and
        #: the one ping timer (re-armed only when it fires early)
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def wake(self, _: object = None) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_timer(self) -> None:
        self.timer = None
        self.wake()

    async def frames(self) -> AsyncIterator[bytes]:
        response = self.response
        if response.head:
            return
        loop = self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        ending = self.ending = loop.create_future()
        iterator = aiter(self.source)
        step: asyncio.Task[Any] | None = None
        # the generator's steps each run in a task of their own, all in one context:
        # context variables it sets hold from one item to the next
        context = contextvars.copy_context()
        _streams.add(self, loop)
        if response.send_timeout is not None and response.scope is not None:
            ensure_user_timeout(response.scope, response.send_timeout)  # a vanished network
        if _shutdown.uvicorn_exiting():
            self.shut_down()  # the server is on its way out already
        interval = response.ping_interval
        ping_at = loop.time() + interval  # a ping after this long without a write
        ending.add_done_callback(self.wake)
        try:
            while True:
                if step is None:
                    step = loop.create_task(_next(iterator), context=context)
                    step.add_done_callback(self.wake)
                if interval and self.timer is None:
                    self.timer = loop.call_at(ping_at, self.on_timer)
                if not (step.done() or ending.done() or (interval and loop.time() >= ping_at)):
                    self.waiter = loop.create_future()  # woken by the step, the end or the timer
                    await self.waiter
                if ending.done():
                    return
                chunk: bytes | None
                if step.done():
                    item, step = step.result(), None
                    if item is _DONE:
                        return
                    chunk = ensure_bytes(item, response.sep)
                elif interval and loop.time() >= ping_at:
                    chunk = self.ping()
                    if chunk is None:
                        ping_at = loop.time() + interval
                        continue
                else:
                    continue  # the timer of a ping that a write moved later
                watchdog = None
                if response.send_timeout is not None and task is not None:
                    watchdog = loop.call_later(response.send_timeout, self.cut, task)
                try:
                    yield chunk
                finally:
                    if watchdog is not None:
                        watchdog.cancel()
                if self.ended_by == "send-timeout":
                    return  # the connection was reset: the write "completed" by failing
                ping_at = loop.time() + interval
        finally:
            _streams.discard(self)
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.grace is not None:
                self.grace.cancel()
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):
                    async with asyncio.timeout(response.cleanup_timeout):
                        await asyncio.wait((step,))
            await close_generator(iterator, response.cleanup_timeout, "event generator")

    def ping(self) -> bytes | None:
        response = self.response
        factory = response.ping_message_factory
        try:
            ping = (
                factory()
                if factory is not None
                else ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=response.sep)
            )
            return ensure_bytes(ping, response.sep)
        except Exception:
            log.exception("ping_message_factory failed; no ping sent")
            return None

    def cut(self, task: asyncio.Task[Any]) -> None:
        """Watchdog: the client has not taken a write within ``send_timeout``."""
        if self.ended_by is None:
            self.ended_by = "send-timeout"
        log.info("client not reading for %s s: stream cut", self.response.send_timeout)
        if self.response.connection is not None:
            _aborter.abort(self.response.connection)  # a future; it runs by itself
        task.cancel()

    def shut_down(self) -> None:
        """The server is shutting down: tell the generator, then end the stream."""
        if self.ended_by is not None or self.ending is None or self.grace is not None:
            return
        if self.response.shutdown_event is not None:
            self.response.shutdown_event.set()
        assert self.loop is not None
        self.grace = self.loop.call_later(self.response.shutdown_grace_period, self.end)

    def end(self) -> None:
        if self.ended_by is None:
            self.ended_by = "shutdown"
        if self.ending is not None and not self.ending.done():
            self.ending.set_result(None)


_streams: _shutdown.OpenStreams[_Stream] = _shutdown.OpenStreams(_Stream.shut_down)
_aborter = Aborter()
