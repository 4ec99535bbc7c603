"""``SSEUser``: one EventSource-like subscriber of any SSE server.

A connection: ``GET`` the subscription's URL with its headers (and ``Last-Event-ID``
on a reconnection), read the body in raw chunks through ``sse_fast.Parser``, and
report each event as a locust request of type ``SSE`` (one stamped before the run
began, a server's replay, as a ``sent before this run`` row and nothing else). Which
events count, and the publish time and sequence each carries, come from ``counts``
and ``read_stamp`` (``Stamps`` by default). Sequences are followed per publisher (the
stamp's source; ``Sequences``) across reconnections, or per connection with
``sequence_per_stream``. When the stream ends, fails, or is ended by
``reconnect_every``, the user waits ``retry`` and connects again, as a browser does.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, ClassVar, NamedTuple

import gevent
from locust import FastHttpUser, task
from orjson import JSONDecodeError
from orjson import loads as _loads

from .._compression import StreamDecoder
from .._core import Parser
from ..loadtarget import Stamp, Stamps, Subscription
from ..protocol import COME_BACK_HEADER, DISCONNECT, MISSED, Reason, read_control
from . import _options
from ._options import DEFAULT_RETRY_MS

__all__ = [
    "DEFAULT_RETRY_MS",
    "DuplicateEvent",
    "LostEvents",
    "MissedEvents",
    "SSEUser",
    "ServerDisconnect",
    "StreamError",
]

SSE = "SSE"
#: the row of counted events that carry no publish time
UNTIMED = "event (no time)"
#: the row of events stamped before the run began (a server replaying what it kept)
BEFORE_RUN = "sent before this run"
#: at a user's stop, one row per publisher it followed: the last sequence number seen
LAST_SEEN = "last seen"
#: an ``sse-fast-disconnect`` for these reasons is a server restarting, not a failure:
#: a stream ended by a drain, or a connection told to come back while a server drains
#: or starts
RESTART_REASONS = frozenset({Reason.DRAINING, Reason.STARTING})


class LostEvents(Exception):
    """An event is missing from a publisher's sequence."""


class DuplicateEvent(Exception):
    """An event arrived again (same publisher, sequence not newer than the last)."""


class MissedEvents(Exception):
    """The server announced ``sse-fast-missed``: resume was impossible."""


class ServerDisconnect(Exception):
    """The server ended the stream with ``sse-fast-disconnect``."""


class StreamError(Exception):
    """The stream could not be opened or broke."""


for _error in (LostEvents, DuplicateEvent, MissedEvents, ServerDisconnect, StreamError):
    _error.__module__ = "sse_fast.locust"  # the name users import it by


def read_chunks(response: Any) -> Any:
    """Yield the response body as raw bytes, as soon as each piece arrives.

    ``FastResponse.iter_content(n)`` waits until ``n`` bytes are buffered, which
    would hold small events back; this reads whatever one ``recv`` brings, with
    geventhttpclient's parser undoing the chunked transfer encoding. Returns at
    the end of the body; raises when the connection breaks mid-body.
    """
    raw = getattr(response, "_response", None)
    if raw is None or not hasattr(raw, "_body_buffer") or not hasattr(raw, "_sock"):
        # another geventhttpclient layout: fall back to the public API (byte by byte)
        yield from response.iter_content(chunk_size=1, decode_content=False)
        return
    while True:
        buffer = raw._body_buffer
        if buffer:
            data = bytes(buffer)
            del buffer[:]
            yield data
            continue
        if raw.message_complete:
            return  # the server ended the body cleanly (terminating chunk)
        sock = raw._sock
        if sock is None:
            raise StreamError("connection released before the end of the body")
        data = sock.recv(raw.block_size)
        raw.feed(data)
        if not data and not raw._body_buffer and not raw.message_complete:
            raise StreamError("connection closed before the end of the body")


class ComeBack(NamedTuple):
    """A response telling the user to come back later: why, what the server said, and
    its ``retry`` (ms; None if it sent none)."""

    reason: str
    message: str
    retry: int | None


def read_come_back(response: Any) -> ComeBack | None:
    """sse_fast's answer that no stream follows (``SSE-Fast-Come-Back: <reason>``: over
    a connection limit, or while a server starts or drains), read to its end: its one
    ``sse-fast-disconnect`` and its ``retry``; None for any other response."""
    received = response.headers
    reason = received.get(COME_BACK_HEADER) if received else None
    if isinstance(reason, list):  # the header repeated: the last one says it
        reason = reason[-1] if reason else None
    if not reason:
        return None
    parser = Parser()
    message = ""
    try:
        for chunk in read_chunks(response):
            for ev in parser.feed(chunk):
                control = read_control(ev.event, ev.data) if ev.event == DISCONNECT else None
                if control is not None:
                    reason = control.reason or reason
                    message = str(control.details.get("message") or "")
    except gevent.GreenletExit:
        raise  # the test is stopping
    except Exception:  # a body cut short or garbled: the header told the reason
        pass
    return ComeBack(str(reason), message, parser.retry)


_user_numbers = itertools.count()


class SSEUser(FastHttpUser):
    """One EventSource-like subscriber of any SSE server; see ``sse_fast.locust``.

    Class attributes (None: the command-line option decides): ``url`` (a URL or a path
    under ``host``, a template: ``--sse-url``), ``headers`` (templates:
    ``--sse-header``), ``topic`` (``--sse-topic``), ``stamps`` (a ``Stamps``: the
    ``--sse-*-field`` options and ``--sse-event``), ``sequence_per_stream``
    (``--sse-seq-per-stream``), ``reconnect_every`` (``--sse-reconnect-every``),
    ``resume`` (False: ``--sse-no-resume``), ``subscribe_name`` (the row's name).
    Methods to override: ``subscribe_url``, ``subscribe_headers``, ``counts``,
    ``read_stamp``.
    """

    weight = 1
    url: ClassVar[str | None] = None
    headers: ClassVar[dict[str, str] | None] = None
    topic: str | None = None
    stamps: Stamps | None = None
    sequence_per_stream: bool | None = None
    reconnect_every: float | None = None
    resume: bool | None = None
    #: ask for a compressed stream: the ``Accept-Encoding`` sent (``--sse-compressed``;
    #: None or "": identity); the stream is decoded as it comes
    compressed: str | None = None
    subscribe_name: ClassVar[str | None] = None

    def __init__(self, environment: Any) -> None:
        # the socket timeout must be set before FastHttpUser builds its session
        option = _options.option
        timeout = float(option(environment, "sse_read_timeout", 60.0)) or None  # 0: none
        self.network_timeout = timeout  # type: ignore[assignment]
        url = type(self).url or option(environment, "sse_url", None)
        if self.host is None and environment.host is None:
            self.host = _options.origin(url)  # a full --sse-url needs no --host
        super().__init__(environment)
        if self.topic is None:
            self.topic = option(environment, "sse_topic", "bench")
        if self.stamps is None:
            self.stamps = _options.stamps(environment)
        if self.sequence_per_stream is None:
            self.sequence_per_stream = bool(option(environment, "sse_seq_per_stream", False))
        if self.reconnect_every is None:
            self.reconnect_every = float(option(environment, "sse_reconnect_every", 0.0))
        if self.resume is None:
            self.resume = not option(environment, "sse_no_resume", False)
        if self.compressed is None:
            self.compressed = option(environment, "sse_compressed", "") or ""
        self.subscription: Subscription = _options.subscription(type(self), environment, self.host)
        self.row = _options.subscribe_row(type(self), environment)
        runner = environment.runner
        worker = getattr(runner, "worker_index", 0) or 0
        self.user_index: int = worker * _options.USERS_PER_WORKER + next(_user_numbers)
        self.last_event_id: str | None = None
        retry = float(option(environment, "sse_retry", DEFAULT_RETRY_MS / 1000))
        self.retry_ms: int = round(retry * 1000)  # until the stream sends retry:
        self.next_wait: float = 0.0  # seconds before the next connection
        self.down_since: float | None = None  # when the previous stream ended
        self.sequences = Sequences()  # per publisher, the last number seen
        self._attempt_path = _attempt_path(self.stamps)
        self._default_reader = type(self).read_stamp is SSEUser.read_stamp
        self._requested_at = 0.0
        self._first_pending = False
        #: events stamped earlier were sent before this run: a row apart, nothing else
        self.run_began = float(getattr(environment, "sse_run_began", 0.0)) or time.time()
        self._fire = environment.events.request.fire

    # -- what users override ---------------------------------------------------

    def subscribe_url(self) -> str:
        """The full URL this user's next connection asks for (the template, filled)."""
        address = self.subscription.address
        base = f"{address.scheme}://{address.host}:{address.port}"
        return base + self.subscription.path(self.topic or "", self.user_index)

    def subscribe_headers(self) -> dict[str, str]:
        """The extra headers of this user's subscribe requests (the templates, filled)."""
        return self.subscription.header_values(self.topic or "", self.user_index)

    def counts(self, event: Any) -> bool:
        """Whether ``event`` (``.event``, ``.data``, ``.id``) counts: by name, per ``stamps``."""
        assert self.stamps is not None
        return self.stamps.counts(event.event)

    def read_stamp(self, event: Any) -> Stamp | None:
        """The publish time, sequence and publisher a counted ``event`` carries (None: none)."""
        return self._read(event)[0]

    def _read(self, event: Any) -> tuple[Stamp | None, int]:
        stamps = self.stamps
        assert stamps is not None
        if stamps.reader is not None:
            return stamps.reader(event.event or "message", event.data), 0
        try:
            body = _loads(event.data)
        except (JSONDecodeError, ValueError, TypeError):
            return None, 0
        stamp = stamps.stamp(body)
        attempt = 0
        if stamp is not None and self._attempt_path is not None:
            found = _dig(body, self._attempt_path)
            attempt = found if isinstance(found, int) and not isinstance(found, bool) else 0
        return stamp, attempt

    def on_stop(self) -> None:
        """Report the last sequence number seen of each publisher (``LAST_SEEN``): with
        the publishers' last, what was neither delivered nor lost (``_report``)."""
        for last in self.sequences.last_numbers():
            self.report(LAST_SEEN, length=last)

    # -- the connection ----------------------------------------------------------

    def wait_time(self) -> float:
        """Seconds before the next connection: the stream's ``retry``, or a refusal's
        ``Retry-After`` when longer."""
        return self.next_wait

    def report(
        self, name: str, response_time: float = 0.0, length: int = 0, exc: Exception | None = None
    ) -> None:
        """Report one ``SSE`` row: ``name``, response time (ms), length, failure."""
        self._fire(
            request_type=SSE,
            name=name,
            response_time=response_time,
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def stream(self) -> None:
        """One connection: open, read until it ends, then schedule the reconnect."""
        self.next_wait = self.retry_ms / 1000
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            "Accept-Encoding": self.compressed or "identity",
            **self.subscribe_headers(),
        }
        if self.last_event_id is not None and self.resume:
            headers["Last-Event-ID"] = self.last_event_id
        if self.sequence_per_stream:
            self.sequences.clear()
        self._requested_at = time.time()
        with self.client.request(
            "GET",
            self.subscribe_url(),
            name=self.row,
            stream=True,
            headers=headers,
            catch_response=True,
        ) as response:
            opened = self._opened(response)
            told = self._told_to_come_back(response) if opened else None
        raw = getattr(response, "_response", None)
        try:
            if not opened or told is not None:
                self._after_failed_open(response)
                if told is not None:  # its retry, as a browser takes it
                    self.next_wait = self.retry_ms / 1000
                return
            if self.down_since is not None:
                self.report("reconnect", (time.time() - self.down_since) * 1000)
            self._first_pending = True
            self._read_stream(response)
        finally:
            if raw is not None:
                raw.release()  # closes the socket unless the body ended cleanly

    def _opened(self, response: Any) -> bool:
        """Whether the request gave a stream; marks the row failed (a refusal) if not."""
        error = getattr(response, "error", None)
        if error is not None or getattr(response, "_response", None) is None:
            response.failure(error or StreamError("no response"))
            return False
        received = response.headers
        content_type = str(received.get("content-type") or "") if received else ""
        status = response.status_code
        if not 200 <= status < 300 or not content_type.startswith("text/event-stream"):
            body = ""
            if not 200 <= status < 300:
                body = " " + (response.text or "")[:200].strip()
            response.failure(StreamError(f"refused: {status} {content_type!r}{body}"))
            return False
        response.success()
        return True

    def _told_to_come_back(self, response: Any) -> str | None:
        """For a 200 that tells the user to come back later (``read_come_back``), its
        reason; None for a stream. No stream follows, so it is not a reconnection: over
        a limit the ``GET`` row fails as a refusal, named as the load generator names
        it; while a server restarts it does not fail, as a ``draining`` end does not,
        and the ``sse-fast-disconnect`` row counts it. Its ``retry`` is kept."""
        told = read_come_back(response)
        if told is None:
            return None
        if told.retry is not None:
            self.retry_ms = told.retry
        if told.reason in RESTART_REASONS:
            self.report(DISCONNECT, length=len(told.message))
        else:
            said = f": {told.message}" if told.message else ""
            response.failure(StreamError(f"told to come back ({told.reason}){said}"))
        return told.reason

    def _after_failed_open(self, response: Any) -> None:
        # the GET row has the failure; honour Retry-After (429/503) if longer
        if self.down_since is None:
            self.down_since = time.time()
        headers = getattr(response, "headers", None)
        retry_after = headers.get("retry-after") if headers is not None else None
        if isinstance(retry_after, str) and retry_after.strip().isdigit():
            self.next_wait = max(self.next_wait, float(retry_after))

    def _read_stream(self, response: Any) -> None:
        parser = Parser(last_event_id=self.last_event_id or "")
        opened = time.time()
        error: Exception | None = None
        coding = (response.headers or {}).get("content-encoding")
        decoder = StreamDecoder(coding) if coding and coding != "identity" else None
        wire = 0
        limit = gevent.Timeout(self.reconnect_every) if self.reconnect_every else None
        if limit is not None:
            limit.start()
        try:
            for chunk in read_chunks(response):
                wire += len(chunk)
                if decoder is not None:
                    chunk = decoder.feed(chunk)
                for ev in parser.feed(chunk):
                    self._dispatch(ev)
                self.last_event_id = parser.last_event_id or None
                if parser.retry is not None:
                    self.retry_ms = parser.retry
        except gevent.Timeout as timeout:
            if timeout is not limit:
                raise
            # ended by reconnect_every: not an error of the stream
        except gevent.GreenletExit:
            raise  # the test is stopping: not an error of the stream
        except Exception as exc:
            error = (
                exc if isinstance(exc, StreamError) else StreamError(f"{type(exc).__name__}: {exc}")
            )
        finally:
            if limit is not None:
                limit.close()
        self.last_event_id = parser.last_event_id or None  # empty: browsers send no header
        if parser.retry is not None:
            self.retry_ms = parser.retry
        self.next_wait = self.retry_ms / 1000
        self.down_since = time.time()
        # its length: the stream's bytes on the wire (compressed when it was)
        self.report("stream end", (self.down_since - opened) * 1000, wire, exc=error)

    # -- one event ----------------------------------------------------------------

    def _dispatch(self, ev: Any) -> None:
        now = time.time()
        kind = ev.event
        data = ev.data
        if kind in (MISSED, DISCONNECT):
            self._control(kind, data)
            return
        if not self.counts(ev):
            self.report("other", length=len(data))
            return
        if self._default_reader:
            stamp, attempt = self._read(ev)
        else:
            stamp, attempt = self.read_stamp(ev), 0
        if stamp is not None and stamp.sent_at is not None and stamp.sent_at < self.run_began:
            self.report(BEFORE_RUN, length=len(data))  # not latency, first event, sequence
            return
        if self._first_pending:
            self._first_pending = False
            self.report("first event", max(0.0, (now - self._requested_at) * 1000), len(data))
        if stamp is None or stamp.sent_at is None:
            self.report(UNTIMED, length=len(data))
        else:
            self.report("event", max(0.0, (now - stamp.sent_at) * 1000), len(data))
        if stamp is not None and stamp.sequence is not None:
            self._follow(stamp.source, stamp.sequence, attempt, len(data))

    def _control(self, kind: str, data: str) -> None:
        control = read_control(kind, data)
        reason = data if control is None else control.reason
        if kind == MISSED:
            self.report(MISSED, length=len(data), exc=MissedEvents(reason))
        else:
            exc = None if reason in RESTART_REASONS else ServerDisconnect(reason)
            self.report(DISCONNECT, length=len(data), exc=exc)

    def _follow(self, source: Any, s: int, r: int, length: int) -> None:
        """Count a gap (lost events) or a repeat (a duplicate) in ``source``'s sequence."""
        kind, missing = self.sequences.follow(source, s, r)
        if kind == "gap":
            self.report("gap", length=missing)
            gap = LostEvents("events missing from a publisher's sequence")
            for n in range(missing):
                self.report("lost", exc=gap)
                if n % 1000 == 999:
                    gevent.sleep(0)  # a huge gap must not starve the other users
        elif kind == "republished":  # a resend after an unconfirmed publish
            self.report("republished", length=length)
        elif kind == "duplicate":
            self.report("duplicate", exc=DuplicateEvent("event received again"))


class Sequences:
    """The sequences one user follows: per publisher, its last number and that
    number's attempt (``r``: a resend after an unconfirmed publish is no duplicate)."""

    def __init__(self) -> None:
        self.seen: dict[Any, tuple[int, int]] = {}  # source -> (last sequence, its attempt)

    def clear(self) -> None:
        """Follow afresh (a stream whose numbers start again)."""
        self.seen.clear()

    def last_numbers(self) -> list[int]:
        """The last number seen of each publisher."""
        return [last for last, _ in self.seen.values()]

    def follow(self, source: Any, s: int, r: int) -> tuple[str, int]:
        """Number ``s`` (attempt ``r``) of ``source``: ``("in order", 0)`` (the first one
        too: the baseline), ``("gap", missing)``, ``("republished", 0)`` or
        ``("duplicate", 0)``."""
        last = self.seen.get(source)
        if last is None or s == last[0] + 1:
            self.seen[source] = (s, r)
            return "in order", 0
        last_s, last_r = last
        if s > last_s + 1:
            self.seen[source] = (s, r)
            return "gap", s - last_s - 1
        if s == last_s and r != last_r:
            self.seen[source] = (s, max(r, last_r))
            return "republished", 0
        return "duplicate", 0


def _attempt_path(stamps: Stamps | None) -> tuple[str, ...] | None:
    """Where the publishers' attempt ``r`` is: next to the sequence (``body.s`` -> ``body.r``)."""
    if stamps is None or stamps.reader is not None or not stamps.sequence:
        return None
    return (*stamps.sequence.split(".")[:-1], "r")


def _dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body
