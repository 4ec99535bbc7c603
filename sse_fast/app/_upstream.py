"""Mirror mode: an upstream SSE stream republished into the hub (``--upstream URL``).

Theory of operation
===================

One reader per server. The upstream is read once per server, not once per
worker. With one worker, that worker reads. With several, ``serve`` gives them
a lock file (``upstream_lock``); the worker that holds an exclusive ``flock`` on
it reads, the others stand by and try the lock every second. When the reader's
process dies the kernel releases its lock and a standby worker takes over,
resuming from the last upstream id the reader recorded (see "State"). A lock
the file system refuses (``ENOLCK``: NFS without locks) is said, once per error,
and tried again every second.

Reading. ``sse_fast.client.connect`` on the upstream URL (with
``upstream_authorization``), reconnecting with ``Last-Event-ID`` after any
failure: waits from 1 s doubling to ``upstream_max_delay``, with jitter; a
connection silent for ``upstream_read_timeout`` is replaced. The upstream may be
any SSE server: topics are chosen by its URL.

Republishing. Each upstream event is published to ``upstream_topic`` keeping its
``event`` name, ``id`` and ``data`` (the data as text, line for line). An
event that carried no ``id`` of its own (the EventSource "last event id" carries
over; an unchanged one means none was sent) gets one of ours. Ids make repeats
harmless: an upstream that replays on resume, or a takeover that resumes from
slightly behind, repeats ids the broker has seen on the topic in the last 5
minutes, and those are not published again (the broker contract's "Retries").
``upstream_transform`` (``module:callable``, may be async) sees each event
first and returns it (maybe changed), a publish document (a dict: one event
or ``{"events": [...]}``, checked as ``POST /publish`` checks it, its topic
defaulting to ``upstream_topic``) or None to drop it. A transform that raises
(a ``CancelledError`` out of its own awaits too), or returns something invalid,
costs that event (counted, logged), never the relay. When the broker cannot
take a publish (503: the relay or Redis away), the event is retried until it
can: reading upstream waits meanwhile, so nothing read is lost. An
``sse-fast-missed`` from an upstream sse_fast (it could not resume us) is passed
on as ``sse-fast-missed`` with reason ``upstream-missed`` to the topic's
streams: they lost what we lost. ``sse-fast-*`` announcements are never
republished as data.

State. ``connecting`` (never connected yet), ``connected``, ``reconnecting``
(lost, with the error), or ``standby``/``no-reader`` on a worker that does not
read. The reader writes its state and last upstream id to ``<lock>.json``
every half second, so every worker's ``/readyz`` tells the same story: ready
while connected or away for less than ``upstream_ready_grace`` seconds (a blip
does not empty a load balancer); not ready before the first connection. The
state is in ``/readyz``'s body and, as ``sse_fast_upstream_*`` metrics, in
``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import inspect
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from .._control_frames import missed_data
from .._core.request import PublishRequest
from .._publish_checks import parse_publish_document
from .._tasks import cancelled_here, stop_task
from ..client import ClientError, Disconnect, Missed, ReceivedEvent, connect
from ..hub import Hub
from ..protocol import MISSED, RESERVED_EVENT_PREFIX, Reason
from ..publishing import PublishError
from ..settings import LimitSettings, RelayModeSettings

__all__ = [
    "LOCK_POLL",
    "STATE_INTERVAL",
    "STATE_STALE",
    "ReaderState",
    "Upstream",
    "load_transform",
]

log = logging.getLogger("sse_fast.upstream")

#: how often the reader records its state, and when a record counts as stale
STATE_INTERVAL = 0.5
#: seconds after which a state record counts as stale (its reader stopped recording)
STATE_STALE = 3.0
#: seconds between a standby worker's tries of the lock
LOCK_POLL = 1.0


def load_transform(spec: str) -> Callable[[Any], Any] | None:
    """``module:callable`` -> the callable (an error that says what is wrong)."""
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(
            f"upstream_transform {spec!r}: cannot import {module_name}: {exc}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise RuntimeError(f"upstream_transform {spec!r}: {module_name} has no {attribute}")
    if not callable(target):
        raise RuntimeError(f"upstream_transform {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


@dataclass
class ReaderState:
    """Where one worker's reading of the upstream is: whether it reads (or stands by),
    the connection's state since when, the last error, whether it ever connected."""

    #: whether this worker reads (else it stands by for the lock)
    reading: bool
    #: connecting, connected, reconnecting or refused
    state: str = "connecting"
    since: float = field(default_factory=time.time)
    error: str = ""
    connected_once: bool = False

    def moved(self, state: str, error: str = "") -> None:
        """The connection is now in ``state`` (since now), ``error`` saying why."""
        self.state, self.since, self.error = state, time.time(), error

    def report(self) -> dict[str, Any]:
        """This worker's part of ``/metrics``."""
        return {"upstream_reading": self.reading, "upstream_up": self.state == "connected"}


class Upstream:
    """The mirror-mode reader of one worker (reading, or standing by)."""

    def __init__(
        self,
        settings: RelayModeSettings,
        limits: LimitSettings,
        hub: Hub,
        reader: ReaderState | None = None,
        lock: str = "",
    ) -> None:
        """``reader``: the state the hub reports (``Hub(reports=...)``), made first by
        the worker's composition root (``app/_worker.py``); a new one when not given.
        ``lock``: the file whose lock elects the reading worker (serve's hand-off,
        ``upstream_lock``, with several workers; none: this worker reads). ``limits``:
        what an event may be (the transform's results are checked as publishes are)."""
        self.settings = settings
        self.limits = limits
        self.hub = hub
        self.url = settings.upstream
        self.topic = settings.upstream_topic
        self.transform = load_transform(settings.upstream_transform)
        self.headers = (
            {"Authorization": settings.upstream_authorization}
            if settings.upstream_authorization
            else {}
        )
        self.lock_path = lock
        self.state_path = self.lock_path + ".json" if self.lock_path else ""
        #: where the reading is (the figures this worker reports: ``ReaderState``)
        self.reader = reader or ReaderState(reading=not self.lock_path)
        self.last_event_id = ""
        self._last_upstream_id = ""  # the id of the last event that carried one
        self._handling = False  # an event read from upstream is being republished
        self._lock_fd: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stream: Any = None

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        """Start reading (or standing by for the lock) in a task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="upstream")

    async def stop(self) -> None:
        """Stop reading, close the upstream stream and, holding the lock, record the last id for
        the next reader and release it."""
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self._stream is not None:
            await self._stream.aclose()
        if self._lock_fd is not None:
            self._record()  # the last id for the next reader
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    async def _run(self) -> None:
        if self.lock_path:
            await self._elect()
            before = self._read_state()
            self.last_event_id = before.get("last_event_id") or ""
            self._last_upstream_id = self.last_event_id
            if before.get("connected_once"):  # a takeover: the grace counts from the loss
                self.reader.connected_once = True
                self.reader.state = "reconnecting"
                lost = before.get("recorded_at") if before.get("state") == "connected" else None
                self.reader.since = float(lost or before.get("since") or self.reader.since)
            log.info(
                "reading upstream %s into topic %s%s",
                self.url,
                self.topic,
                f" from id {self.last_event_id}" if self.last_event_id else "",
            )
        recorder = asyncio.get_running_loop().create_task(self._watch(), name="upstream-state")
        try:
            while True:
                try:
                    await self._read()
                    self._away("the upstream answered 204 No Content: it asks us to stop")
                except ClientError as exc:  # a refusal retrying does not fix, e.g. 401
                    self._away(str(exc))
                except (Exception, asyncio.CancelledError) as exc:  # anything else: said,
                    if cancelled_here(exc):  # and tried again (not the reader's own stop)
                        raise
                    log.exception("upstream %s: reading failed", self.url)
                    self._away(f"{type(exc).__name__}: {exc}")
                log.error(
                    "upstream %s: %s; trying again in %g s (upstream_max_delay)",
                    self.url,
                    self.reader.error,
                    self.settings.upstream_max_delay,
                )
                await asyncio.sleep(self.settings.upstream_max_delay)
        finally:
            await stop_task(recorder)

    async def _elect(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        said = 0  # the error said last (each one once, not every second)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # another worker reads
                    pass
                except OSError as exc:  # the file system's (ENOLCK: NFS without locks)
                    if exc.errno != said:
                        said = exc.errno or -1
                        log.error(
                            "upstream lock %s cannot be taken (%s): this worker cannot read "
                            "the upstream until it can (tried every %g s); keep the lock on "
                            "a local file system",
                            self.lock_path,
                            exc,
                            LOCK_POLL,
                        )
                await asyncio.sleep(LOCK_POLL)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self.reader.reading = True
        self.reader.moved("connecting", self.reader.error)

    async def _read(self) -> None:
        stream = connect(
            self.url,
            headers=self.headers,
            last_event_id=self.last_event_id,
            retry=1.0,
            max_delay=self.settings.upstream_max_delay,
            read_timeout=self.settings.upstream_read_timeout,
        )
        self._stream = stream
        # the events' iterator is closed here however reading ends (the upstream ends the
        # stream, an error, a cancel while an event is republished), not left to the garbage
        # collector, whose finalizer only schedules the close, on a loop that may be closing
        events = cast("AsyncGenerator[ReceivedEvent, None]", aiter(stream))
        async with stream, contextlib.aclosing(events):
            async for event in events:
                self._handling = True
                self._connected()
                if isinstance(event, Missed):
                    await self.missed(event)
                elif isinstance(event, Disconnect):
                    log.info("upstream ends the stream: %s", event.reason or event.data)
                elif event.event.startswith(RESERVED_EVENT_PREFIX):
                    log.info("upstream announcement %s: %s", event.event, event.data[:200])
                else:
                    await self.republish(event)
                self.last_event_id = event.id  # (the stream's may be ahead: one read, many events)
                self._handling = False

    async def _watch(self) -> None:
        """Follow the connection's state; record it for the other workers."""
        while True:
            stream = self._stream
            if stream is not None:
                if stream.connected:
                    self._connected()
                elif self.reader.state == "connected":
                    self.reader.moved("reconnecting")
                    log.warning("upstream %s lost; reconnecting", self.url)
                self.hub.metrics.upstream_reconnects_total = stream.reconnects
                if not self._handling and stream.last_event_id:
                    # every event read is handled: the stream's id is ours (it moves
                    # without events too, e.g. sse_fast's first frame says where we are)
                    self.last_event_id = stream.last_event_id
            self._record()
            await asyncio.sleep(STATE_INTERVAL)

    def _away(self, error: str) -> None:
        self.reader.moved("refused", error)
        self._stream = None

    def _connected(self) -> None:
        if self.reader.state != "connected":
            self.reader.moved("connected")
            if self.reader.connected_once:
                log.info("upstream %s back", self.url)
            self.reader.connected_once = True

    # ------------------------------------------------------------ events

    async def republish(self, event: Any) -> None:
        """Publish one event of the upstream stream to the topic (through the
        transform, if one is set); what the read loop does with each event."""
        carried = event.id if event.id and event.id != self._last_upstream_id else None
        if event.id:
            self._last_upstream_id = event.id
        metrics = self.hub.metrics
        try:
            requests = await self._requests(event, carried)
        except (Exception, asyncio.CancelledError) as exc:  # the transform, or its result
            if cancelled_here(exc):  # (a CancelledError out of the transform's own awaits
                raise  # is its failure: it must not end the reading for good)
            metrics.upstream_errors_total += 1
            log.warning("upstream event %r skipped: %s", event.id, exc)
            return
        if not requests:
            metrics.upstream_dropped_total += 1
            return
        await self._publish(requests)
        metrics.upstream_events_total += 1

    async def _requests(self, event: Any, carried: str | None) -> list[PublishRequest]:
        result: Any = event
        if self.transform is not None:
            result = self.transform(event)
            if inspect.isawaitable(result):
                result = await result
        if result is None:
            return []
        if isinstance(result, ReceivedEvent):
            return [
                PublishRequest(
                    (self.topic,),
                    result.data,
                    None if result.event == "message" else result.event,
                    # an id the transform kept is the event's (None when it carried none)
                    carried if result.id == event.id else (result.id or None),
                )
            ]
        if isinstance(result, dict):
            document = result
            if "events" not in document and "topic" not in document and "topics" not in document:
                document = {**document, "topic": self.topic}
            return parse_publish_document(document, self.limits, "the transform's result")
        raise TypeError(
            f"the transform returned {type(result).__name__}; expected a ReceivedEvent, "
            "a publish document (dict) or None"
        )

    async def _publish(self, requests: list[PublishRequest]) -> None:
        wait = 0.1
        while True:
            try:
                await self.hub.publish(requests)
                return
            except PublishError as exc:
                if exc.status != 503:
                    self.hub.metrics.upstream_errors_total += 1
                    log.warning("upstream event not publishable, skipped: %s", exc)
                    return
                log.warning(
                    "cannot publish upstream events yet (%s); retrying in %.1f s", exc, wait
                )
            await asyncio.sleep(wait)
            wait = min(2.0, wait * 2)

    async def missed(self, event: Any) -> None:
        """The upstream could not resume us: count it and tell our subscribers
        with an ``sse-fast-missed`` event of reason ``upstream-missed``."""
        self.hub.metrics.upstream_missed_total += 1
        log.warning("upstream could not resume us (%s): events were lost there", event.reason)
        data = missed_data(Reason.UPSTREAM_MISSED, upstream_reason=event.reason)
        await self._publish([PublishRequest((self.topic,), data, MISSED)])

    # ------------------------------------------------------------ state

    def _record(self) -> None:
        if not self.state_path or not self.reader.reading:
            return
        temporary = f"{self.state_path}.{os.getpid()}"
        try:
            with open(temporary, "wb") as out:
                out.write(orjson.dumps(self._own_status()))
            os.replace(temporary, self.state_path)
        except OSError as exc:  # the other workers see a stale state: "no-reader"
            log.warning("cannot record the upstream state in %s: %s", self.state_path, exc)

    def _read_state(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            with open(self.state_path, "rb") as f:
                stale = time.time() - os.fstat(f.fileno()).st_mtime > STATE_STALE
                state = orjson.loads(f.read())
            if isinstance(state, dict):
                state["stale"] = stale
                return state
        return {}

    def _own_status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "topic": self.topic,
            "state": self.reader.state,
            "since": self.reader.since,
            "connected_once": self.reader.connected_once,
            "last_event_id": self.last_event_id,
            "error": self.reader.error,
            "reader_pid": os.getpid(),
            "recorded_at": time.time(),
        }

    def status(self) -> dict[str, Any]:
        """The upstream's state as this server knows it (any worker)."""
        if self.reader.reading:
            status = self._own_status()
        else:
            status = self._read_state()
            if not status:
                status = {"state": "no-reader", "since": self.reader.since, "connected_once": False}
            elif status.pop("stale"):
                status["state"] = "no-reader"  # its reader died; a standby takes over
        status["url"], status["topic"] = self.url, self.topic
        away = 0.0 if status["state"] == "connected" else time.time() - status["since"]
        status["ready"] = status["state"] == "connected" or (
            bool(status.get("connected_once")) and away < self.settings.upstream_ready_grace
        )
        return status
