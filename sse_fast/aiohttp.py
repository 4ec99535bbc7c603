"""Server-Sent Events for aiohttp: a drop-in for aiohttp-sse.

    from sse_fast.aiohttp import sse_response   # was: from aiohttp_sse import sse_response

    async def hello(request):
        async with sse_response(request) as resp:
            while resp.is_connected():
                await resp.send("tick", event="clock")
                await asyncio.sleep(1)
        return resp

Theory of operation
-------------------
* Same API. ``EventSourceResponse`` (a ``StreamResponse``) and ``sse_response``
  take aiohttp-sse 3.0's arguments (``status``, ``reason``, ``headers``, ``sep``,
  ``allow_all_methods``, ``send_timeout``, ``ping_interval``, ``response_cls``)
  and have its methods (``prepare``, ``send``, ``wait``, ``stop_streaming``,
  ``is_connected``, ``last_event_id``, ``async with``). ``sse_response``
  works with ``async with`` (3.0) and, as in aiohttp-sse 2.x, with ``await``
  (a prepared response, ended by ``stop_streaming()``).
* Same bytes. Frames come from the native encoder in aiohttp-sse's field order
  (id, event, data, retry) and with its separator (``\\r\\n`` unless ``sep`` is
  given; ``sep="\\n"`` gives the shorter line ends). Bad ids, event names and
  retries raise ``ValueError`` with aiohttp-sse's messages.
* A client that is gone: a write to it raises (aiohttp knows its transport), and
  the ping task, which also looks at the transport every ``DISCONNECT_CHECK``
  second, ends: ``is_connected()`` turns false and ``wait()`` returns within about a
  second even when nothing is written (aiohttp-sse learns it at the next ping). A write
  that does not complete within ``send_timeout`` aborts the connection
  (``TimeoutError``). As aiohttp-sse does, ``TCP_USER_TIMEOUT`` is set to
  ``send_timeout`` on the socket (Linux), so a peer whose network vanished is
  dropped by the kernel once a write (a ping, at least) goes unacknowledged
  that long.
* Compression, opt-in: ``compress=True`` compresses the stream when the request's
  ``Accept-Encoding`` asks (zstd, gzip or deflate), each write flushed so every event
  arrives as it is sent (aiohttp's ``enable_compression`` holds writes in its
  buffer, and stays refused here), with ``Vary: Accept-Encoding``.
* Pings: ``: ping`` every ``ping_interval`` seconds, as aiohttp-sse sends them
  (the next one ``ping_interval`` seconds after the last went out, whatever
  else is sent); with ``ping_when_idle=True`` only after ``ping_interval``
  seconds without a write.
* Shutdown: SIGTERM and SIGINT (a handler chained in front of aiohttp's, see
  ``sse_fast/_shutdown.py``), or ``shutdown_streams()``, stop every open stream
  of the process: ``wait()`` returns and handlers end, so ``run_app`` need not
  wait out its ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

try:
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.web import BaseRequest, ContentCoding, Request, StreamResponse
    from aiohttp.web_exceptions import HTTPMethodNotAllowed
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("sse_fast.aiohttp needs aiohttp: pip install 'sse_fast[aiohttp]'") from exc

from . import _shutdown
from ._core import ID_FIRST_ORDER, EncodeError, encode

if TYPE_CHECKING:
    from .compression import StreamCompressor

__all__ = ["EventSourceResponse", "open_streams", "shutdown_streams", "sse_response"]

_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)
_LINE_ENDS = ("\r\n", "\r", "\n")
_ORDER = ID_FIRST_ORDER  # aiohttp-sse's: id, event, data, retry
#: aiohttp-sse's words for what it refuses (a retry that is not an int: ours)
_THEIR_WORDS = {
    "id": "id must not contain line separators or null characters",
    "event": "event must not contain line separators",
}


def _separator(sep: str | None, default: str) -> str:
    """``sep``, or ``default`` when None: any non-empty string, as aiohttp-sse
    takes (a line end, for an ``EventSource`` to read the stream)."""
    if sep is None:
        return default
    if not isinstance(sep, str) or not sep:
        raise ValueError(
            f"sep must be a non-empty string (a line end: \\r\\n, \\r or \\n), got {sep!r}"
        )
    return sep


#: seconds between checks that the client is still connected (aiohttp does not
#: tell a handler that is not writing: without them ``wait()`` would learn it
#: only from the next ping's failed write)
DISCONNECT_CHECK = 1.0
_streams: _shutdown.OpenStreams[EventSourceResponse] = _shutdown.OpenStreams(
    lambda response: response._stop_quietly()
)


def shutdown_streams() -> int:
    """Stop every open stream of this process (what SIGTERM does); how many."""
    return _streams.stop_all()


def open_streams() -> int:
    """How many streams of this process are open now: what ``shutdown_streams()``
    would end (for a health page or a gauge)."""
    return len(_streams)


class EventSourceResponse(StreamResponse):
    """A Server-Sent Events response for aiohttp (aiohttp-sse's API)."""

    DEFAULT_PING_INTERVAL: float = 15
    DEFAULT_SEND_TIMEOUT: float | None = 120
    DEFAULT_SEPARATOR = "\r\n"
    DEFAULT_LAST_EVENT_HEADER = "Last-Event-Id"

    def __init__(
        self,
        *,
        status: int = 200,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        sep: str | None = None,
        allow_all_methods: bool = False,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        ping_when_idle: bool = False,
        compress: bool = False,
    ) -> None:
        super().__init__(status=status, reason=reason)
        #: compress when the request asks (``prepare`` chooses), every write flushed
        self._compress = compress
        self._compressor: StreamCompressor | None = None
        if headers is not None:
            self.headers.extend(headers)
        self.headers["Content-Type"] = "text/event-stream"
        self.headers["Cache-Control"] = "no-cache"
        self.headers["Connection"] = "keep-alive"
        self.headers["X-Accel-Buffering"] = "no"
        if ping_interval <= 0:
            raise ValueError("ping interval must be positive")
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError("send_timeout must be > 0 seconds (or None: no limit)")
        self._ping_interval = ping_interval
        self._ping_task: asyncio.Task[None] | None = None
        self._sep = _separator(sep, self.DEFAULT_SEPARATOR)
        self._ping_when_idle = ping_when_idle
        self._allow_all_methods = allow_all_methods
        self._send_timeout = send_timeout
        self._saved_tcp_user_timeout: int | None = None
        self._tcp_sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_write = 0.0

    def is_connected(self) -> bool:
        """True while prepared and streaming (the ping task still runs)."""
        if not self.prepared or self._ping_task is None:
            return False
        return not self._ping_task.done()

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        """Send the headers and start streaming (again: check the client is there)."""
        if not self._allow_all_methods and request.method != "GET":
            raise HTTPMethodNotAllowed(request.method, ("GET",))
        if self.prepared:
            if request.protocol.transport is None:
                raise asyncio.CancelledError()  # the client is gone (as aiohttp-sse)
            return self._payload_writer
        self._set_tcp_user_timeout(request)
        if self._compress:
            # imported here: a response that does not compress loads nothing of it
            from .compression import StreamCompressor

            self._compressor = StreamCompressor.negotiate(request.headers.get("Accept-Encoding"))
            self.headers["Vary"] = "Accept-Encoding"
            if self._compressor is not None:
                self.headers["Content-Encoding"] = self._compressor.coding
        writer = await super().prepare(request)
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()
        self._ping_task = asyncio.create_task(self._ping())
        self.enable_chunked_encoding()
        _streams.add(self, self._loop)
        return writer

    def _set_tcp_user_timeout(self, request: BaseRequest) -> None:
        if self._send_timeout is None or _TCP_USER_TIMEOUT is None or request.transport is None:
            return
        sock = request.transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        self._saved_tcp_user_timeout = sock.getsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT)
        self._tcp_sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(self._send_timeout * 1000))

    def _restore_tcp_user_timeout(self) -> None:
        if self._saved_tcp_user_timeout is None or self._tcp_sock is None:
            return
        if self._tcp_sock.fileno() >= 0 and _TCP_USER_TIMEOUT is not None:  # (for mypy)
            self._tcp_sock.setsockopt(
                socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, self._saved_tcp_user_timeout
            )
        self._tcp_sock = None
        self._saved_tcp_user_timeout = None

    async def write_eof(self, data: bytes = b"") -> None:
        """End the response (aiohttp's ``write_eof``), restoring the socket's
        ``TCP_USER_TIMEOUT``."""
        compressor, self._compressor = self._compressor, None
        if compressor is not None:  # the stream's last bytes (zstd: its frame's end)
            data = compressor.compress(data) + compressor.end()
        await super().write_eof(data)
        self._restore_tcp_user_timeout()
        _streams.discard(self)

    async def send(
        self,
        data: str,
        id: str | None = None,
        event: str | None = None,
        retry: int | None = None,
    ) -> None:
        """Send one event (``data`` split into lines). ``TimeoutError`` and an
        aborted connection when the write does not complete within
        ``send_timeout``; ``ConnectionResetError`` when the client is gone."""
        try:
            if self._sep in _LINE_ENDS:
                frame = encode(data, event=event, id=id, retry=retry, sep=self._sep, order=_ORDER)
            else:  # any other separator, as aiohttp-sse takes it
                frame = encode(data, event=event, id=id, retry=retry, order=_ORDER)
                frame = frame.replace(b"\n", self._sep.encode())
        except EncodeError as exc:
            if exc.field == "retry" and type(retry) is int:
                raise ValueError("retry must not be negative") from exc
            raise ValueError(_THEIR_WORDS.get(exc.field, str(exc))) from exc
        await self._write(frame)

    async def _write(self, frame: bytes) -> None:
        if self._compressor is not None:
            frame = self._compressor.compress(frame)
        if self._loop is not None:
            self._last_write = self._loop.time()
        try:
            async with asyncio.timeout(self._send_timeout):
                await self.write(frame)
        except ConnectionResetError:
            self._stop_quietly()
            raise
        except TimeoutError:
            self._stop_quietly()
            self._abort_transport()
            raise

    async def wait(self) -> None:
        """Until the client leaves or ``stop_streaming()`` is called."""
        if self._ping_task is None:
            raise RuntimeError("Response is not started")
        try:
            await self._ping_task
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise

    def stop_streaming(self) -> None:
        """End the stream: ``wait()`` returns (call it from another task)."""
        if self._ping_task is None:
            raise RuntimeError("Response is not started")
        self._ping_task.cancel()

    def _stop_quietly(self) -> None:
        if self._ping_task is not None:
            self._ping_task.cancel()

    def _abort_transport(self) -> None:
        if self._req is not None and self._req.transport is not None:
            self._req.transport.abort()

    def enable_compression(
        self, force: bool | ContentCoding | None = None, strategy: int | None = None
    ) -> None:
        """Not supported: an event stream is never compressed (``NotImplementedError``)."""
        raise NotImplementedError

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` a reconnecting client sent (None if none)."""
        if self._req is None:
            raise RuntimeError("EventSource request must be prepared first")
        return self._req.headers.get(self.DEFAULT_LAST_EVENT_HEADER)

    async def _ping(self) -> None:
        """Runs while the stream is open: ``: ping`` every ``ping_interval`` seconds
        (with ``ping_when_idle``, after ``ping_interval`` seconds without a write);
        ends when the client is gone or a write times out."""
        loop = self._loop
        assert loop is not None
        message = f": ping{self._sep}{self._sep}".encode()
        next_ping = loop.time() + self._ping_interval
        try:
            while True:
                if self._gone():
                    return
                if self._ping_when_idle:
                    next_ping = self._last_write + self._ping_interval
                wait = next_ping - loop.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, DISCONNECT_CHECK))
                    continue
                try:
                    await self._write(message)
                except (TimeoutError, ConnectionResetError, RuntimeError):
                    return  # RuntimeError: a write after the end
                next_ping = loop.time() + self._ping_interval
        finally:
            _streams.discard(self)

    def _gone(self) -> bool:
        """The client closed or lost the connection (aiohttp drops the transport)."""
        transport = self._req.transport if self._req is not None else None
        return transport is None or transport.is_closing()

    async def __aenter__(self) -> EventSourceResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_streaming()
        await self.wait()


def sse_response(
    request: Request,
    *,
    status: int = 200,
    reason: str | None = None,
    headers: Mapping[str, str] | None = None,
    sep: str | None = None,
    send_timeout: float | None = EventSourceResponse.DEFAULT_SEND_TIMEOUT,
    ping_interval: float = EventSourceResponse.DEFAULT_PING_INTERVAL,
    response_cls: type[EventSourceResponse] = EventSourceResponse,
    allow_all_methods: bool = False,
    ping_when_idle: bool = False,
    compress: bool = False,
) -> _Prepared:
    """``async with sse_response(request) as resp:`` prepares an
    ``EventSourceResponse`` and stops it on leaving the block; ``resp = await
    sse_response(request)`` (aiohttp-sse 2.x's form) prepares it and leaves the
    ending to you (``stop_streaming()``, or the client leaving)."""
    if not issubclass(response_cls, EventSourceResponse):
        raise TypeError(
            "response_cls must be subclass of sse_fast.aiohttp.EventSourceResponse, "
            f"got {response_cls}"
        )
    response = response_cls(
        status=status,
        reason=reason,
        headers=headers,
        sep=sep,
        allow_all_methods=allow_all_methods,
        send_timeout=send_timeout,
        ping_interval=ping_interval,
        ping_when_idle=ping_when_idle,
        compress=compress,
    )
    return _Prepared(response, request)


class _Prepared:
    """What ``sse_response`` returns: an async context manager, and awaitable."""

    __slots__ = ("request", "response")

    def __init__(self, response: EventSourceResponse, request: Request) -> None:
        self.response = response
        self.request = request

    def __await__(self) -> Generator[Any, None, EventSourceResponse]:
        return self._prepare().__await__()

    async def _prepare(self) -> EventSourceResponse:
        await self.response.prepare(self.request)
        return self.response

    async def __aenter__(self) -> EventSourceResponse:
        await self.response.prepare(self.request)
        return await self.response.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.response.__aexit__(exc_type, exc, traceback)
