"""The write engine of ``EventSourceResponse``: one response being streamed, in the
request's own task (see the theory of operation in ``sse_fast/starlette/__init__.py``).

``_Stream`` runs the response: the start, the items one by one (as sse-starlette,
by default) or coalesced (``_coalesce._Coalescer``, with ``coalesce=True``), pings on a timer,
the disconnect watch, shutdown and the end. Every write goes out in order: a ping
or a write behind waits for the write before it. sse-starlette's seams, when
replaced (see ``sse_fast/starlette/sse.py``), run in tasks beside the stream's
(``run_beside``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from .. import _shutdown
from .._abort import ensure_user_timeout
from .._adapters.items import ServerSentEvent, ensure_bytes
from .._asgi import Message, Receive, Scope, Send, SendStyle
from .._tasks import close_generator, step
from ._coalesce import BATCH_BYTES, DEFERS_AFTER_EMPTY_HOLD, _Coalescer
from ._control import AppStatus, SendTimeoutError, streams

if TYPE_CHECKING:
    from .sse import EventSourceResponse

__all__ = ["BATCH_BYTES", "DEFERS_AFTER_EMPTY_HOLD"]  # (``_coalesce``)

#: sse-starlette's own logger name: logging configured for it (levels, filters,
#: alerts on its errors) keeps working after the import change
log = logging.getLogger("sse_starlette.sse")
_style = SendStyle()  # Granian's eager send, learnt from the first write that shows it

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


class _Writes:
    """A stream's writes and pings, in order: a write waits for the one on its way,
    a ping goes after any write (the stream's life is ``_Stream``'s)."""

    def __init__(self, response: EventSourceResponse, send: Send) -> None:
        self.response = response
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.ended_by: str | None = None  # why we cancelled our own task
        self.writing = False  # a write of the stream's task is being awaited
        #: set when that write is done, for a ping waiting to go after it (made on demand)
        self.write_done: asyncio.Future[None] | None = None
        self.last_write = self.loop.time()
        self.ping_timer: asyncio.TimerHandle | None = None
        #: a write still on its way in a task of its own (a ping, or a batch written while
        #: the generator waits); the next write waits for it
        self.pending_write: asyncio.Task[None] | None = None
        #: a write handed over in a task of its own is being awaited
        self.writing_behind = False

    def end(self, reason: str) -> None:  # pragma: no cover - ``_Stream.end``
        raise NotImplementedError

    # ------------------------------------------------------------ writing

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
            if self.write_done is not None:
                self.write_done.set_result(None)
                self.write_done = None

    async def finish(self, pending: Any) -> None:
        """Await a write that was not done at once, within ``send_timeout``."""
        try:
            async with asyncio.timeout(self.response.send_timeout):
                await pending
        except TimeoutError:
            raise SendTimeoutError() from None

    def write_behind(self, chunk: bytes) -> None:
        """Write without waiting here: a write that does not complete at once (the
        connection is full) finishes in a task of its own, within ``send_timeout``;
        the next write waits for it. Batches written while the generator waits go
        this way."""
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        if self.pending_write is not None or self.writing:  # one on its way: go after it
            self.last_write = self.loop.time()
            self.pending_write = self.loop.create_task(
                self.finish_behind(None, self.pending_write, message)
            )
            return
        result = self.hand_over(message)
        if result is None:
            return
        done, rest = step(result)  # a coroutine send (uvicorn) usually completes at once
        if not done:
            self.pending_write = self.loop.create_task(self.finish_behind(rest))

    async def finish_behind(
        self,
        pending: Any,
        previous: asyncio.Task[None] | None = None,
        message: Message | None = None,
    ) -> None:
        """The task of a write on its way: ``pending`` (a write's rest), or
        ``message``, handed over once the writes before it are done."""
        try:
            if message is not None:
                if previous is not None:
                    await asyncio.wait((previous,))
                while self.writing:  # the stream's own write is on its way: after it
                    if self.write_done is None:
                        self.write_done = self.loop.create_future()
                    await self.write_done
                if self.ended_by is not None:
                    return
                pending = self.hand_over(message)
            if pending is not None:
                self.writing_behind = True
                try:
                    await self.finish(pending)
                finally:
                    self.writing_behind = False
        except SendTimeoutError:
            self.end("timeout")
        except Exception:  # pragma: no cover - a server whose send failed
            self.end("disconnect")
        finally:
            if self.pending_write is asyncio.current_task():
                self.pending_write = None

    # ------------------------------------------------------------ pings

    def ping_due(self) -> None:
        """Timer: a ping every ``ping`` seconds (sse-starlette's schedule: the next
        one ``ping`` seconds after this one went out), or with ``ping_when_idle``
        after ``ping`` seconds without a write. It is written by a task of its
        own, after any write on its way, within ``send_timeout``."""
        response = self.response
        self.ping_timer = None
        if not response.active or self.ended_by is not None:
            return
        if response.ping_when_idle:
            idle = self.loop.time() - self.last_write
            if idle < response.ping_interval or self.writing or self.pending_write is not None:
                wait = max(response.ping_interval - idle, 0.05)
                self.ping_timer = self.loop.call_later(wait, self.ping_due)
                return
        chunk = _ping_bytes(response)
        if chunk is None:
            self.ping_timer = self.loop.call_later(response.ping_interval, self.ping_due)
            return
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        ping = self.loop.create_task(self.finish_behind(None, self.pending_write, message))
        self.pending_write = ping
        ping.add_done_callback(self.ping_sent)

    def ping_sent(self, ping: asyncio.Task[None]) -> None:
        if self.response.active and self.ended_by is None and self.ping_timer is None:
            self.ping_timer = self.loop.call_later(self.response.ping_interval, self.ping_due)

    async def ping_send(self, message: Message) -> None:
        """``send`` for a replaced ping loop (``_ping``): the ping goes after any
        write on its way, as the timer's do."""
        ping = self.loop.create_task(self.finish_behind(None, self.pending_write, message))
        self.pending_write = ping
        await ping


class _Stream(_Writes):
    """One response being streamed (runs in the request's task)."""

    def __init__(
        self, response: EventSourceResponse, scope: Scope, receive: Receive, send: Send
    ) -> None:
        super().__init__(response, send)
        self.scope = scope
        self.receive = receive
        self.task: asyncio.Task[Any] | None = None
        self.close_message: Message | None = None
        self.grace_timer: asyncio.TimerHandle | None = None
        self.watch: asyncio.Future[Message] | None = None
        self.sender: asyncio.Task[None] | None = None
        #: when the stream was ended, a write was stuck: no last chunk behind it
        self.write_cut = False
        #: tasks beside the stream's: replaced seams (``run_beside``)
        self.beside: tuple[asyncio.Task[None], ...] = ()
        #: what a task beside raised, raised by the stream (``ended_by`` "failure")
        self.failure: Exception | None = None
        self.coalescer: _Coalescer | None = None

    async def run(
        self,
        exit_listener: Callable[[], Awaitable[None]] | None = None,
        ping_loop: Callable[[Send], Awaitable[None]] | None = None,
    ) -> None:
        """Stream the response. ``exit_listener`` and ``ping_loop`` are
        sse-starlette's seams when replaced (``_listen_for_exit_signal``,
        ``_ping``): awaited beside the stream instead of its registry and timer."""
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
        cancelled_outside = False  # someone else cancelled the task (an anyio scope?)
        try:
            if exit_listener is None:
                streams.add(self, self.loop)
            else:
                self.start_beside(exit_listener, shut_down_after=True)
            if response.coalesce:
                self.coalescer = _Coalescer(self, response.busy_batch_delay)
            if response.send_timeout is not None:  # a vanished network: see "Pings"
                ensure_user_timeout(self.scope, response.send_timeout)
            self.arm_watch()
            if response.ping_interval > 0:
                if ping_loop is None:
                    self.ping_timer = self.loop.call_later(response.ping_interval, self.ping_due)
                else:
                    self.start_beside(functools.partial(ping_loop, self.ping_send))
            if response.data_sender_callable is not None:
                self.sender = self.loop.create_task(_run_sender(response.data_sender_callable))
            if exit_listener is None and (AppStatus.should_exit or _shutdown.uvicorn_exiting()):
                self.shut_down()  # the server is already on its way out
            if self.coalescer is not None:
                await self.coalescer.stream_items(aiter(iterator), response.sep)
            else:
                await self.stream_one_by_one(aiter(iterator), response.sep)
            interrupted = False
            response.active = False
            await self.write(b"", more=False)
        except asyncio.CancelledError:
            if self.ended_by is None or self.task is None or self.task.uncancel() > 0:
                cancelled_outside = True
                raise  # not (only) ours: the server cancelled the request
            await self.ended_by_us(interrupted)
        finally:
            response.active = False
            self.stop()
            if cancelled_outside:
                # shielded, as sse-starlette's cleanup is: an anyio scope cancelled
                # around the response (a task group's, a timeout's) cancels every
                # wait inside it (a shield costs ~20 us: only when it may be needed)
                with anyio.CancelScope(shield=True):
                    await self.clean_up(iterator, interrupted)
            elif interrupted or self.sender is not None or self.beside:
                await self.clean_up(iterator, interrupted)

    async def clean_up(self, iterator: Any, interrupted: bool) -> None:
        """Close the generator if it was interrupted; stop the tasks beside."""
        if interrupted:
            await close_generator(iterator, self.response._cleanup_timeout, "body iterator", log)
        await self.stop_tasks()

    async def ended_by_us(self, interrupted: bool) -> None:
        """After our own cancellation (``end``): say why, as sse-starlette does."""
        response = self.response
        if self.ended_by == "timeout":
            raise SendTimeoutError() from None
        if self.ended_by == "failure" and self.failure is not None:
            raise self.failure
        if self.ended_by == "disconnect":
            handler = response.client_close_handler_callable
            if handler is not None and self.close_message is not None:
                await handler(self.close_message)
        elif self.ended_by == "shutdown":
            response.active = False
            if self.write_cut:  # the client is not reading: ended as sse-starlette ends
                return
            held = self.coalescer.take_gathered() if self.coalescer is not None else b""
            with contextlib.suppress(Exception, SendTimeoutError):
                await self.write(held, more=False)  # held items too

    async def stream_one_by_one(self, iterator: AsyncIterator[Any], sep: str) -> None:
        """sse-starlette's way: ask for an item, write it, wait for the write, then
        ask for the next (a slow client slows its generator down)."""
        debug = log.isEnabledFor(logging.DEBUG)
        async for item in iterator:
            chunk = ensure_bytes(item, sep)
            if debug:
                log.debug("chunk: %s", chunk)
            await self.write(chunk)

    # ------------------------------------------------------------ seams beside

    def start_beside(
        self, work: Callable[[], Awaitable[None]], shut_down_after: bool = False
    ) -> None:
        self.beside += (self.loop.create_task(self.run_beside(work, shut_down_after)),)

    async def run_beside(
        self, work: Callable[[], Awaitable[None]], shut_down_after: bool = False
    ) -> None:
        """A replaced seam, in a task beside the stream's: the exit listener (its
        return is a shutdown: ``shut_down_after``) or the ping loop. What it
        raises ends the stream, which raises it (``SendTimeoutError`` as a send
        timeout), as sse-starlette's task group does."""
        try:
            await work()
        except SendTimeoutError:
            self.end("timeout")
        except Exception as exc:
            self.failure = exc
            self.end("failure")
        else:
            if shut_down_after:
                self.shut_down()

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
            log.debug("Got event: http.disconnect. Stop streaming.")
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
        self.write_cut = self.writing or self.writing_behind
        self.task.cancel()

    def stop(self) -> None:
        """Everything but the task itself and the data sender: timers, the watch,
        writes on their way, the tasks beside (cancelled; ``stop_tasks`` awaits them)."""
        streams.discard(self)
        if self.coalescer is not None:
            self.coalescer.close()
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
        for task in self.beside:  # (awaited in ``stop_tasks``)
            task.cancel()

    async def stop_tasks(self) -> None:
        """Cancel ``data_sender_callable`` and the tasks beside the stream, and wait
        until they have ended, as sse-starlette's task group does
        (``cleanup_timeout`` at most)."""
        tasks = [*self.beside] if self.sender is None else [self.sender, *self.beside]
        self.sender = None
        self.beside = ()
        if not tasks:
            return
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.wait(tasks, timeout=self.response._cleanup_timeout)


def _ping_bytes(response: EventSourceResponse) -> bytes | None:
    """A ping's bytes (``ping_message_factory()``'s, or sse-starlette's comment);
    None when the factory failed (logged)."""
    factory = response.ping_message_factory
    try:
        ping = (
            factory()
            if factory is not None
            else ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=response.sep)
        )
        chunk = ensure_bytes(ping, response.sep)
    except Exception:
        log.exception("ping_message_factory failed; no ping sent")
        return None
    if log.isEnabledFor(logging.DEBUG):
        log.debug("ping: %s", chunk)
    return chunk


async def _run_sender(callable_: Callable[[], Awaitable[None]]) -> None:
    try:
        await callable_()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("data_sender_callable failed")
