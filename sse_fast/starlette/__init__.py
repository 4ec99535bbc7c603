"""Server-Sent Events for Starlette and FastAPI: a drop-in for sse-starlette.

    from sse_fast.starlette import EventSourceResponse   # was: from sse_starlette import ...

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        async def feed():
            while True:
                yield {"event": "tick", "data": await next_tick()}
        return EventSourceResponse(feed(), ping=15, send_timeout=10)

The originals' module paths work too: ``sse_fast.starlette.sse`` and
``sse_fast.starlette.event`` are ``sse_starlette.sse`` and ``sse_starlette.event``.

Theory of operation
-------------------
* Same arguments, same items, same bytes. ``EventSourceResponse`` takes what
  sse-starlette's takes (``content`` an async iterable or a sync iterator;
  ``ping``, ``ping_message_factory``, ``sep``, ``headers``, ``media_type``,
  ``background``, ``send_timeout``, ``data_sender_callable``,
  ``client_close_handler_callable``, ``shutdown_event``,
  ``shutdown_grace_period``, ``cleanup_timeout``). Items are
  ``ServerSentEvent`` objects (ours, or anything whose ``encode()`` gives
  bytes), dicts of their fields, bytes (sent as they are) or anything else (its
  ``str()`` is the data). By default a client receives the bytes sse-starlette
  sends: its field order, its ``\\r\\n`` line ends, its pings on its schedule,
  its headers, one write per item; the frames come from the native encoder,
  which writes that order and separator itself (``sep="\\n"`` gives the
  shorter line ends). Our own ways are keyword arguments: ``coalesce`` (next
  two points) and ``ping_when_idle`` (see "Pings").
* One task per stream. The response runs in the request's own task and
  iterates the content there; pings are a timer (and a task for each ping while
  it is written), the disconnect watch a
  callback on ``receive()``, shutdown one registry per process: no task group
  of four tasks per stream (sse-starlette's), which is most of what a stream
  costs.
* Disconnects. When ``receive()`` reports ``http.disconnect`` the stream's task
  is cancelled where it waits (the content iterator sees ``CancelledError``, as
  under sse-starlette), ``client_close_handler_callable`` is awaited, and the
  response returns normally. The iterator is closed (``aclose``) within
  ``cleanup_timeout``.
* Catching up (``coalesce=True``). Items the content has ready at once (its queue holds a
  backlog: the generator returns without waiting) are written together, up to
  64 KiB a write; before an item that must be waited for, what was gathered is
  written (at once, unless the loop is saturated: next), never held back behind
  it (``_Coalescer.stream_items``, ``_tasks.step``). A
  client sees the same events; a stream that fell behind costs the server one
  write per batch instead of one per event.
* Saturated (``coalesce=True``). With a queue per subscriber a backlog never forms by itself
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
  ``busy_batch_delay=None`` turns this off. A shutdown sends what is held with
  the last chunk. Without ``coalesce``, as in sse-starlette, the generator is
  asked for an item only once the write before it is done, so a client that
  reads slowly slows its generator down.
* Pings and slow clients. A comment (``: ping - <time>``, or
  ``ping_message_factory()``) goes out every ``ping`` seconds, as
  sse-starlette sends it: the next one ``ping`` seconds after the last went
  out, whatever else the stream sends. With ``ping_when_idle=True`` it goes
  out only after ``ping`` seconds without a write (a stream busy with events
  needs none). A ping is written by a short task of its own, after any write
  on its way (never over it, where sse-starlette's may). A write that does not complete within
  ``send_timeout`` seconds (a client that stopped reading: its buffers are full)
  ends the stream with ``SendTimeoutError``, as sse-starlette does. Under
  Granian a write is handed over when ``send`` is called (see
  ``sse_fast/_asgi.py``) and is not awaited unless the connection is full;
  to see that, body messages skip Starlette's own send wrappers, which only note
  that the response started (``_PASS_THROUGH``; a user's middleware is kept).
  A client whose network vanished sends no FIN or RST, and small pings take
  long to fill the buffers: with ``send_timeout`` set, ``TCP_USER_TIMEOUT`` of
  that many seconds goes on the server's sockets (Linux, once per process,
  ``sse_fast/_abort.py``), so the kernel drops the connection when a ping stays
  unacknowledged that long and the server reports the disconnect: within
  ``ping`` + ``send_timeout`` (+ the retransmission steps).
* Shutdown. ``shutdown_streams()`` ends every open stream of the process:
  ``shutdown_event`` is set, the generator has ``shutdown_grace_period``
  seconds to finish, then it is cancelled and the response ends cleanly (its
  last chunk sent). It is called on SIGTERM and SIGINT (a handler chained in
  front of the server's, installed with the first stream, in the main thread),
  when uvicorn starts its shutdown, and when ``AppStatus.should_exit`` is set
  to true (sse-starlette's switch). A stream whose write is stuck then (a
  client that stopped reading) ends without its last chunk, as sse-starlette's
  do, rather than wait behind it. ``AppStatus.enable_automatic_graceful_drain =
  False`` keeps signals from ending these streams, and only these: the aiohttp
  and Django adapters' streams and a mounted hub still end on a signal.
* sse-starlette's seams. What its tests (and code written against it) patch
  is here and works as there: ``EventSourceResponse._listen_for_exit_signal``
  (replaced, its return shuts the stream down: it alone, as it replaces
  sse-starlette's watcher) and the ``anyio`` of ``sse_fast.starlette.sse``
  (a replaced ``anyio.sleep`` paces the pings: ``_ping``). A stream looks them
  up once, when it starts; as they are, it does their work itself (the
  registry, a timer): nothing per event (see ``sse_fast/starlette/sse.py``).
  The generator's cleanup after a cancellation from outside is shielded from
  an anyio scope cancelled around the response, as sse-starlette's is.
* HTTP/2 and HTTP/3 responses carry no ``Connection`` header (it is forbidden
  there); HTTP/1.1 ones keep ``Connection: keep-alive`` as sse-starlette's.
* Logs go to sse-starlette's logger, ``sse_starlette.sse``, with its messages (a
  chunk and a ping at DEBUG, a failed or cut-short cleanup at ERROR/WARNING), so
  logging configured for it keeps working after the import change.
* ``last_event_id(request)`` gives the ``Last-Event-ID`` header a reconnecting
  client sends, decoded as UTF-8 (None when absent).
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "sse_fast.starlette needs Starlette: pip install 'sse_fast[starlette]'"
    ) from exc

from . import event, sse
from ._control import AppStatus, SendTimeoutError, open_streams, shutdown_streams
from .event import JSONServerSentEvent, ServerSentEvent, ensure_bytes
from .sse import EventSourceResponse, last_event_id

__all__ = [
    "AppStatus",
    "EventSourceResponse",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "ServerSentEvent",
    "ensure_bytes",
    "event",
    "last_event_id",
    "open_streams",
    "shutdown_streams",
    "sse",
]
