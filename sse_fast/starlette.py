"""Server-Sent Events for Starlette and FastAPI: a drop-in for sse-starlette.

    from sse_fast.starlette import EventSourceResponse   # was: from sse_starlette import ...

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        async def feed():
            while True:
                yield {"event": "tick", "data": await next_tick()}
        return EventSourceResponse(feed(), ping=15, send_timeout=10)

Theory of operation
-------------------
* Same arguments, same items. ``EventSourceResponse`` takes what sse-starlette's
  takes (``content`` an async iterable or a sync iterator; ``ping``,
  ``ping_message_factory``, ``sep``, ``headers``, ``media_type``,
  ``background``, ``send_timeout``, ``data_sender_callable``,
  ``client_close_handler_callable``, ``shutdown_event``,
  ``shutdown_grace_period``, ``cleanup_timeout``). Items are
  ``ServerSentEvent`` objects (ours, or anything whose ``encode()`` gives
  bytes), dicts of their fields, bytes (sent as they are) or anything else (its
  ``str()`` is the data). The events a client parses are the ones sse-starlette
  sends (the same data, names, ids, retry and comments); the bytes differ only
  in field order and, unless ``sep`` is given, in line ends (``\\n`` instead of
  ``\\r\\n``). Frames come from the native encoder.
* One task per stream. The response runs in the request's own task and
  iterates the content there; pings are a timer, the disconnect watch a
  callback on ``receive()``, shutdown one registry per process: no task group
  of four tasks per stream (sse-starlette's), which is most of what a stream
  costs.
* Disconnects. When ``receive()`` reports ``http.disconnect`` the stream's task
  is cancelled where it waits (the content iterator sees ``CancelledError``, as
  under sse-starlette), ``client_close_handler_callable`` is awaited, and the
  response returns normally. The iterator is closed (``aclose``) within
  ``cleanup_timeout``.
* Catching up. Items the content has ready at once (its queue holds a
  backlog: the generator returns without waiting) are written together, up to
  64 KiB a write; before an item that must be waited for, what was gathered is
  written (at once, unless the loop is saturated: next), never held back behind
  it (``_Stream.stream_items``, ``_tasks.step``). A
  client sees the same events; a stream that fell behind costs the server one
  write per batch instead of one per event.
* Saturated. With a queue per subscriber a backlog never forms by itself
  (each publish wakes every subscriber, and they all run before the next
  publish is read), so when events come faster than the loop can write them
  one by one, each still costs a wake-up, a ``send`` and a system call, and
  the loop falls behind for good. While the loop is saturated (measured by
  ``sse_fast/_adapters/pacing.py``), a stream that receives an event less than
  ``busy_batch_delay`` (0.05 s) after its last write *holds* it: the
  generator is not asked again until the pacer's next tick, so what comes
  meanwhile waits in its queue (or socket) and goes out in the same write,
  for one wake-up. A generator that had nothing ready after a hold (it runs on
  a timer of its own) is not held for its next 16 writes: they are
  *deferred* to the tick instead, the generator going on at its own pace. An
  event that comes ``busy_batch_delay`` or more after the last write is
  written at once, and a loop that is not saturated holds nothing.
  ``busy_batch_delay=None`` turns this off (keyword only: not in
  sse-starlette). A shutdown sends what is held with the last chunk.
* Pings and slow clients. A comment (``: ping - <time>``, or
  ``ping_message_factory()``) goes out after ``ping`` seconds without a write
  (a stream busy with events needs none). A write that does not complete within
  ``send_timeout`` seconds (a client that stopped reading: its buffers are full)
  ends the stream with ``SendTimeoutError``, as sse-starlette does. Under
  Granian a write is handed over when ``send`` is called (see
  ``sse_fast/asgi.py``) and is not awaited unless the connection is full;
  to see that, body messages skip Starlette's own send wrappers, which only note
  that the response started (``_PASS_THROUGH``; a user's middleware is kept).
  A client whose network vanished sends no FIN or RST, and small pings take
  long to fill the buffers: with ``send_timeout`` set, ``TCP_USER_TIMEOUT`` of
  that many seconds goes on the server's sockets (Linux, once per process,
  ``sse_fast/abort.py``), so the kernel drops the connection when a ping stays
  unacknowledged that long and the server reports the disconnect: within
  ``ping`` + ``send_timeout`` (+ the retransmission steps).
* Shutdown. ``shutdown_streams()`` ends every open stream of the process:
  ``shutdown_event`` is set, the generator has ``shutdown_grace_period``
  seconds to finish, then it is cancelled and the response ends cleanly (its
  last chunk sent). It is called on SIGTERM and SIGINT (a handler chained in
  front of the server's, installed with the first stream, in the main thread),
  when uvicorn starts its shutdown, and when ``AppStatus.should_exit`` is set
  to true (sse-starlette's switch).
* HTTP/2 and HTTP/3 responses carry no ``Connection`` header (it is forbidden
  there); HTTP/1.1 ones keep ``Connection: keep-alive`` as sse-starlette's.
* ``last_event_id(request)`` gives the ``Last-Event-ID`` header a reconnecting
  client sends, decoded as UTF-8 (None when absent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "sse_fast.starlette needs Starlette: pip install 'sse_fast[starlette]'"
    ) from exc
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from . import _shutdown
from ._adapters import pacing as _pacing
from ._adapters.items import JSONServerSentEvent, ServerSentEvent, ensure_bytes
from ._tasks import close_generator, step, uncancel, within
from .abort import ensure_user_timeout
from .asgi import SendStyle
from .frames import line_end

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

log = logging.getLogger("sse_fast.starlette")
#: most bytes of ready items written together (see ``_Stream.stream_items``)
BATCH_BYTES = 64 * 1024
#: a stream whose generator had nothing ready after a hold defers this many writes
#: before it holds again (see "Saturated")
DEFERS_AFTER_EMPTY_HOLD = 16


class SendTimeoutError(TimeoutError):
    """A write to the client did not complete within ``send_timeout``."""


def last_event_id(connection: HTTPConnection | Scope) -> str | None:
    """The ``Last-Event-ID`` a reconnecting client sent (decoded as UTF-8, bytes that
    are not UTF-8 replaced), or None."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            return bytes(value).decode("utf-8", "replace")
    return None


# ---------------------------------------------------------------- shutdown


class _AppStatusMeta(type):
    """``AppStatus.should_exit = True`` (sse-starlette's switch) ends the streams."""

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "should_exit" and value:
            shutdown_streams()
        elif name == "enable_automatic_graceful_drain":
            _shutdown.enabled = bool(value)


class AppStatus(metaclass=_AppStatusMeta):
    """sse-starlette's shutdown switch: set ``should_exit`` to true to end every
    stream (``shutdown_streams``); new streams end at once while it is true."""

    should_exit = False
    enable_automatic_graceful_drain = True

    @staticmethod
    def disable_automatic_graceful_drain() -> None:
        """Signals no longer end the streams (set ``should_exit`` yourself)."""
        AppStatus.enable_automatic_graceful_drain = False

    @staticmethod
    def enable_automatic_graceful_drain_mode() -> None:
        AppStatus.enable_automatic_graceful_drain = True


def shutdown_streams() -> int:
    """End every open stream of this process (see "Shutdown"); returns how many.
    Safe to call from any thread and from a signal handler."""
    return _streams.stop_all()


def open_streams() -> int:
    """How many streams of this process are open now: what ``shutdown_streams()``
    would end (for a health page or a gauge)."""
    return len(_streams)


# ---------------------------------------------------------------- the response


class _Event(Protocol):
    def set(self) -> Any: ...


Content = AsyncIterable[Any] | Iterable[Any]


class EventSourceResponse(Response):
    """A Server-Sent Events response (see the module docstring); the arguments of
    sse-starlette's ``EventSourceResponse``."""

    DEFAULT_PING_INTERVAL = 15
    DEFAULT_SEPARATOR = "\n"
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
        busy_batch_delay: float | None = DEFAULT_BUSY_BATCH_DELAY,
    ) -> None:
        self.sep = line_end(sep, self.DEFAULT_SEPARATOR)
        if isinstance(content, AsyncIterable):
            self.body_iterator: AsyncIterable[Any] = content
        else:
            self.body_iterator = iterate_in_threadpool(iter(content))
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
        self.busy_batch_delay = busy_batch_delay
        self.active = True

    @property
    def ping_interval(self) -> float:
        return self._ping_interval

    @ping_interval.setter
    def ping_interval(self, value: float) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError("ping interval must be int or float")
        if value < 0:
            raise ValueError("ping interval must be >= 0 (0 disables ping)")
        self._ping_interval = value

    def enable_compression(self, force: bool = False) -> None:
        raise NotImplementedError("Compression is not supported for SSE streams.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            send = _websocket_denial(send)
        if scope["type"] == "http" and scope.get("method", "GET").upper() == "HEAD":
            # headers and an empty body: an endless stream must not start on HEAD
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self._headers_for(scope),
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await _Stream(self, scope, receive, send).run()
        if self.background is not None:
            await self.background()

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


_style = SendStyle()  # Granian's eager send, learnt from the first write that shows it
_streams: _shutdown.OpenStreams[_Stream] = _shutdown.OpenStreams(lambda s: s.shut_down())

# Starlette's own send wrappers, which only note that the response started and pass
# every message on: once the start went through them, body messages can go to the
# server's send directly (where Granian's eager write can be seen, and no coroutine
# per wrapper is made per write). Any other wrapper (a user's middleware) is kept.
_PASS_THROUGH = frozenset(
    {
        ("starlette.middleware.errors", "ServerErrorMiddleware.__call__.<locals>._send"),
        (
            "starlette._exception_handler",
            "wrap_app_handling_exceptions.<locals>.wrapped_app.<locals>.sender",
        ),
    }
)


def _innermost_send(send: Send) -> Send:
    """``send`` without Starlette's pass-through wrappers (see ``_PASS_THROUGH``)."""
    for _ in range(16):
        code = getattr(send, "__code__", None)
        key = (getattr(send, "__module__", None), getattr(send, "__qualname__", None))
        if code is None or key not in _PASS_THROUGH:
            return send
        cells = dict(zip(code.co_freevars, getattr(send, "__closure__", None) or (), strict=False))
        cell = cells.get("send")
        inner = getattr(cell, "cell_contents", None) if cell is not None else None
        if not callable(inner):
            return send
        send = inner
    return send


class _Stream:
    """One response being streamed (runs in the request's task)."""

    def __init__(
        self, response: EventSourceResponse, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.response = response
        self.scope = scope
        self.receive = receive
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[Any] | None = None
        self.ended_by: str | None = None  # why we cancelled our own task
        self.close_message: Message | None = None
        self.writing = False  # a data write is being awaited
        self.last_write = self.loop.time()
        self.ping_timer: asyncio.TimerHandle | None = None
        self.grace_timer: asyncio.TimerHandle | None = None
        self.watch: asyncio.Future[Message] | None = None
        #: a write still on its way in a task of its own (a ping, or a batch written while
        #: the generator waits); the next write waits for it
        self.pending_write: asyncio.Task[None] | None = None
        self.sender: asyncio.Task[None] | None = None
        #: the loop's load and shared tick while events are held (see "Saturated")
        self.pacer: _pacing.Pacer | None = None
        #: encoded items not yet written, and their size
        self.gathered: list[bytes] = []
        self.gathered_size = 0
        #: the pacer's tick at which the gathered items go out, while deferred
        self.deferred: asyncio.Future[None] | None = None
        #: writes to defer rather than hold (a generator on a timer: see "Saturated")
        self.defers_left = 0

    async def run(self) -> None:
        response = self.response
        self.task = asyncio.current_task()
        started = self.send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response._headers_for(self.scope),
            }
        )
        _style.observe(started)
        await started
        self.send = _innermost_send(self.send)  # the start went through every wrapper
        iterator = response.body_iterator
        interrupted = True
        try:
            _streams.add(self, self.loop)
            if response.busy_batch_delay is not None:
                self.pacer = _pacing.pacer(self.loop)
                self.pacer.opened()
            if response.send_timeout is not None:  # a vanished network: see "Pings"
                ensure_user_timeout(self.scope, response.send_timeout)
            self.arm_watch()
            if response.ping_interval > 0:
                self.ping_timer = self.loop.call_later(response.ping_interval, self.ping_due)
            if response.data_sender_callable is not None:
                self.sender = self.loop.create_task(_run_sender(response.data_sender_callable))
            if AppStatus.should_exit or _shutdown.uvicorn_exiting():
                self.shut_down()  # the server is already on its way out
            await self.stream_items(aiter(iterator), response.sep)
            interrupted = False
            response.active = False
            await self.write(b"", more=False)
        except asyncio.CancelledError:
            if self.ended_by is None or self.task is None or uncancel(self.task) > 0:
                raise  # not (only) ours: the server cancelled the request
            if self.ended_by == "timeout":
                raise SendTimeoutError() from None
            if self.ended_by == "disconnect":
                handler = response.client_close_handler_callable
                if handler is not None and self.close_message is not None:
                    await handler(self.close_message)
            elif self.ended_by == "shutdown":
                response.active = False
                with contextlib.suppress(Exception, SendTimeoutError):
                    await self.write(self.take_gathered(), more=False)  # held items too
        finally:
            response.active = False
            self.stop()
            if interrupted:
                await close_generator(iterator, response._cleanup_timeout, "body iterator")

    # ------------------------------------------------------------ writing

    async def stream_items(self, iterator: AsyncIterator[Any], sep: str) -> None:
        """Write every item; items that are ready at once (the generator did not
        wait: a backlog in its queue) go out together, in one write of up to
        ``BATCH_BYTES``, so a stream that fell behind catches up at a fraction of
        the server's cost per write. When the generator must wait, what is
        gathered is written first, at once unless the loop is saturated (then
        an event is held, or its write deferred: see "Saturated")."""
        gathered = self.gathered
        pacer, delay = self.pacer, self.response.busy_batch_delay or 0.0
        held_back = False  # the generator was not asked while we held
        while True:
            try:
                ready, result = step(iterator.__anext__())
                if ready:
                    held_back = False
                else:
                    if held_back:  # nothing built up meanwhile: a generator on a timer
                        self.defers_left = DEFERS_AFTER_EMPTY_HOLD
                        held_back = False
                    if gathered and self.deferred is None:  # (deferred: out at the tick)
                        if pacer is not None and self.saturated(pacer, delay):
                            self.defers_left = max(self.defers_left - 1, 0)
                            self.defer(pacer, delay)
                        else:
                            # written behind: the generator's wait is pending, and only
                            # it may be interrupted (a timeout of its own cancels this task)
                            try:
                                self.write_gathered()
                            except BaseException:
                                await result.abandon(self.response._cleanup_timeout)
                                raise
                    result = await result
                    if pacer is not None and not self.defers_left and self.saturated(pacer, delay):
                        self.gather(ensure_bytes(result, sep))
                        await pacer.tick(delay)
                        held_back = True
                        continue
            except StopAsyncIteration:
                break
            except Exception:
                with contextlib.suppress(Exception):  # what came before still goes out
                    self.write_gathered()
                raise
            if self.gather(ensure_bytes(result, sep)) >= BATCH_BYTES:
                await self.write(self.take_gathered())
        if gathered:
            await self.write(self.take_gathered())

    def saturated(self, pacer: _pacing.Pacer, delay: float) -> bool:
        """Hold this stream's writes? The loop is saturated and it wrote less than
        ``delay`` ago."""
        return pacer.busy and self.loop.time() - self.last_write < delay

    def gather(self, chunk: bytes) -> int:
        self.gathered.append(chunk)
        self.gathered_size += len(chunk)
        return self.gathered_size

    def take_gathered(self) -> bytes:
        """The gathered items as one chunk, no longer gathered (nor deferred)."""
        chunk = b"".join(self.gathered)
        self.gathered.clear()
        self.gathered_size = 0
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        return chunk

    def write_gathered(self) -> None:
        if self.gathered:
            self.write_behind(self.take_gathered())

    def defer(self, pacer: _pacing.Pacer, delay: float) -> None:
        """What is gathered is written at the pacer's next tick, with what comes
        until then; the generator goes on at its own pace (a hold, in
        ``stream_items``, stops asking it until the tick: see "Saturated")."""
        self.deferred = pacer.tick(delay)
        self.deferred.add_done_callback(self.on_tick)

    def on_tick(self, tick: asyncio.Future[None]) -> None:
        if tick is not self.deferred:
            return  # written meanwhile (take_gathered), or the stream ended
        self.deferred = None
        if self.ended_by is None and self.response.active:
            try:
                self.write_gathered()
            except Exception:  # pragma: no cover - a server whose send failed
                self.end("disconnect")

    def hand_over(self, message: Message) -> Any | None:
        """``send`` the message: None when the write is done (Granian's eager send,
        learnt past Starlette's wrappers), else what to await."""
        result = self.send(message)
        self.last_write = self.loop.time()
        if _style.written(result):
            return None
        if not _style.eager:
            _style.observe(result)
            if _style.written(result):
                return None
        return result

    def write_behind(self, chunk: bytes) -> None:
        """Write without waiting here: a write that does not complete at once (the
        connection is full) finishes in a task of its own, within ``send_timeout``;
        the next write waits for it. Pings, and batches written while the
        generator waits, go this way."""
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        previous = self.pending_write
        if previous is not None:  # one still on its way: this one goes after it
            self.last_write = self.loop.time()
            self.pending_write = self.loop.create_task(self.finish_behind(None, previous, message))
            return
        result = self.hand_over(message)
        if result is None:
            return
        done, rest = step(result)  # a coroutine send (uvicorn) usually completes at once
        if not done:
            self.pending_write = self.loop.create_task(self.finish_behind(rest))

    async def write(self, chunk: bytes, more: bool = True) -> None:
        while (pending := self.pending_write) is not None:  # one on its way: keep the order
            if pending.done():
                self.pending_write = None
            else:
                await asyncio.wait((pending,))
        result = self.hand_over({"type": "http.response.body", "body": chunk, "more_body": more})
        if result is None:
            return
        self.writing = True
        try:
            if self.response.send_timeout is None:
                await result  # (one coroutine less per write: most of them, on uvicorn)
            else:
                await self.finish(result)
        finally:
            self.writing = False

    async def finish(self, pending: Any) -> None:
        """Await a write that was not done at once, within ``send_timeout``."""
        try:
            await within(pending, self.response.send_timeout)
        except TimeoutError:
            raise SendTimeoutError() from None

    def ping_due(self) -> None:
        """Timer: a ping after ``ping`` seconds without a write."""
        response = self.response
        self.ping_timer = None
        if not response.active or self.ended_by is not None:
            return
        idle = self.loop.time() - self.last_write
        if idle < response.ping_interval or self.writing or self.pending_write is not None:
            wait = max(response.ping_interval - idle, 0.05)
            self.ping_timer = self.loop.call_later(wait, self.ping_due)
            return
        factory = response.ping_message_factory
        try:
            ping = (
                factory()
                if factory is not None
                else ServerSentEvent(
                    comment=f"ping - {datetime.now(timezone.utc)}", sep=response.sep
                )
            )
            chunk: bytes | None = ensure_bytes(ping, response.sep)
        except Exception:
            log.exception("ping_message_factory failed; no ping sent")
            chunk = None
        if chunk is not None:
            self.write_behind(chunk)
        self.ping_timer = self.loop.call_later(response.ping_interval, self.ping_due)

    async def finish_behind(
        self,
        pending: Any,
        previous: asyncio.Task[None] | None = None,
        message: Message | None = None,
    ) -> None:
        """The task of a write on its way: ``pending`` (a write's rest), or
        ``message``, handed over once the write ``previous`` is done."""
        try:
            if previous is not None:
                await asyncio.wait((previous,))
                if self.ended_by is not None:
                    return
                pending = self.hand_over(message or {})
            if pending is not None:
                await self.finish(pending)
        except SendTimeoutError:
            self.end("timeout")
        except Exception:  # pragma: no cover - a server whose send failed
            self.end("disconnect")
        finally:
            if self.pending_write is asyncio.current_task():
                self.pending_write = None

    # ------------------------------------------------------------ ending

    def arm_watch(self) -> None:
        self.watch = asyncio.ensure_future(self.receive())
        self.watch.add_done_callback(self.on_receive)

    def on_receive(self, watch: asyncio.Future[Message]) -> None:
        if watch.cancelled():
            return
        if watch.exception() is not None:
            self.end("disconnect")
            return
        message = watch.result()
        if message.get("type") == "http.disconnect":
            self.close_message = message
            self.response.active = False
            self.end("disconnect")
        elif self.ended_by is None:
            self.arm_watch()  # a request body message: keep watching

    def shut_down(self) -> None:
        """The server is shutting down: tell the generator, then end the stream."""
        if self.ended_by is not None or self.grace_timer is not None:
            return
        response = self.response
        if response._shutdown_event is not None:
            response._shutdown_event.set()
        if response._shutdown_grace_period > 0:
            self.grace_timer = self.loop.call_later(
                response._shutdown_grace_period, self.end, "shutdown"
            )
        else:
            self.end("shutdown")

    def end(self, reason: str) -> None:
        """Cancel the stream's task (once), saying why."""
        if self.ended_by is not None or self.task is None or self.task.done():
            return
        self.ended_by = reason
        self.task.cancel()

    def stop(self) -> None:
        """Everything but the task itself: timers, the watch, the data sender."""
        _streams.discard(self)
        if self.deferred is not None:
            self.deferred.cancel()
            self.deferred = None
        if self.pacer is not None:
            self.pacer.closed()
            self.pacer = None
        for timer in (self.ping_timer, self.grace_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.grace_timer = None
        if self.watch is not None:
            if not self.watch.done():
                self.watch.remove_done_callback(self.on_receive)
                self.watch.cancel()
            # Granian's receive() future holds its callbacks (so this stream) and the
            # garbage collector cannot see into it: no reference back, or the pair
            # outlives the request (measured: ~17 objects, ~10 KiB per stream)
            self.watch = None
        if self.pending_write is not None and not self.pending_write.done():
            self.pending_write.cancel()
        if self.sender is not None and not self.sender.done():
            self.sender.cancel()


async def _run_sender(callable_: Callable[[], Awaitable[None]]) -> None:
    try:
        await callable_()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("data_sender_callable failed")
