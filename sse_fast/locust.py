"""Locust users for SSE servers: subscribers and publishers (``pip install
'sse_fast[locust]'``).

Import them in your own locustfile::

    from sse_fast.locust import PublisherUser, SSEUser  # noqa: F401  (locust finds them)

    class MySubscriber(SSEUser):      # or subclass them: weight, wait_time, host ...
        weight = 10

Two user classes:

``SSEUser``
    Subscribes to ``GET /events?topic=T`` and reads the body with
    ``sse_fast.Parser`` (raw body chunks, never line splitting). Every event whose
    data is JSON with a publish timestamp ``t`` (wall-clock seconds) and a
    sequence ``s`` is reported as request type ``SSE``, name ``event``, with the
    publish-to-receive latency as its response time. Gaps in ``s`` per publisher
    ``w`` are reported as ``lost`` (one failure per missing event), repeats as
    ``duplicate``. It reconnects like a browser: when the stream ends or fails it
    waits ``retry`` ms (from the stream, 3000 by default) and reconnects with
    ``Last-Event-ID`` set to the last id seen; each reconnection is a
    ``reconnect`` row (response time: how long the stream was down). Control
    events show as ``sse-fast-missed`` (failure) and ``sse-fast-disconnect``.

``PublisherUser``
    ``POST /publish`` of ``{"topic": T, "data": "<JSON text>"}`` at a fixed rate
    per user, with ``Authorization: Bearer $SSE_FAST_PUBLISH_TOKEN`` when that
    variable is set. The data text is ``{"t": time.time(), "s": n, "w": id,
    "r": attempt}``: one sequence space per publisher user, ``w`` unique per user
    (worker index, process id, counter), ``r`` > 0 when the same ``s`` is sent
    again after an unconfirmed publish (so a resend is not counted as a duplicate).
    ``fixed_count`` is 1 (``--publishers``); every other user is an ``SSEUser``.

Options (flags, or the environment variables in brackets):
``--sse-topic`` [SSE_TOPIC] (bench), ``--publish-rate`` [SSE_PUBLISH_RATE]
(publishes per second per PublisherUser, 1), ``--publishers`` [SSE_PUBLISHERS]
(1), ``--sse-read-timeout`` [SSE_READ_TIMEOUT] (seconds without a byte before a
stream counts as dead, 60; the server sends a heartbeat every 15 s).

Run it (loopback, small load; the server must allow many streams per IP)::

    SSE_FAST_PUBLISH_TOKEN=t python -m sse_fast serve --port 8765 \\
        --max-connections-per-ip 0 --connect-rate-per-ip 0 &
    SSE_FAST_PUBLISH_TOKEN=t locust -f benches/locustfile.py SSEUser PublisherUser \\
        --headless -u 50 -r 25 -t 20s --host http://127.0.0.1:8765 \\
        --csv /tmp/loc --html /tmp/loc.html
    # the same on 2 worker processes (the publisher lands on one of them):
    SSE_FAST_PUBLISH_TOKEN=t locust -f benches/locustfile.py SSEUser PublisherUser \\
        --headless -u 50 -r 25 -t 20s --host http://127.0.0.1:8765 \\
        --processes 2 --csv /tmp/loc2 --html /tmp/loc2.html
    # or master/worker by hand (workers need the token variable too):
    locust -f benches/locustfile.py --master --headless --expect-workers 2 -u 50 -r 25 -t 20s \\
        --host http://127.0.0.1:8765 --csv /tmp/loc3
    SSE_FAST_PUBLISH_TOKEN=t locust -f benches/locustfile.py --worker   # x2

Read ``/tmp/loc_stats.csv``: the ``SSE,event`` row is the latency distribution
(ms); ``SSE,lost`` / ``SSE,duplicate`` must show 0 requests; ``POST,/publish``
is the publish round trip. Latency uses the publisher's wall clock, so across
machines the clocks must be in sync. Locust exits with status 1 when any row
has failures (a lost event, a failed publish, a failed connection).
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import time
from typing import Any
from urllib.parse import urlencode

try:
    import gevent
    from locust import FastHttpUser, events, task
    from locust.runners import WorkerRunner
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"sse_fast.locust needs locust ({exc}); install it with: pip install 'sse_fast[locust]'"
    ) from exc

from ._core import Parser
from .protocol import DISCONNECT, MISSED, Reason, read_control

__all__ = [
    "DEFAULT_RETRY_MS",
    "DuplicateEvent",
    "LostEvents",
    "MissedEvents",
    "PublisherUser",
    "SSEUser",
    "ServerDisconnect",
    "StreamError",
]

try:
    from orjson import dumps as _dumps
    from orjson import loads as _loads

    def _json_text(obj: Any) -> str:
        return _dumps(obj).decode()

except ImportError:  # pragma: no cover - orjson is a dependency of sse_fast
    import json

    _loads = json.loads  # type: ignore[assignment]

    def _json_text(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"))


log = logging.getLogger("sse_fast.locust")

#: the reconnection delay before a stream sends ``retry:`` (ms; what browsers use)
DEFAULT_RETRY_MS = 3000  # what browsers use before a stream sends ``retry:``
_SSE = "SSE"
# rows that exist even at zero, so a clean run shows "lost 0" in the CSV/HTML
_ALWAYS_SHOWN = ("event", "lost", "duplicate", "reconnect", MISSED)


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


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--sse-topic",
        env_var="SSE_TOPIC",
        default="bench",
        help="topic to subscribe and publish to",
    )
    parser.add_argument(
        "--publish-rate",
        env_var="SSE_PUBLISH_RATE",
        type=float,
        default=1.0,
        help="publishes per second per PublisherUser",
    )
    parser.add_argument(
        "--publishers",
        env_var="SSE_PUBLISHERS",
        type=int,
        default=1,
        help="number of PublisherUser users (fixed_count)",
    )
    parser.add_argument(
        "--sse-read-timeout",
        env_var="SSE_READ_TIMEOUT",
        type=float,
        default=60.0,
        help="seconds without data before a stream counts as dead",
    )


def _option(environment: Any, name: str, default: Any) -> Any:
    options = environment.parsed_options
    value = getattr(options, name, None) if options is not None else None
    return default if value is None else value


_environment: Any = None


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    global _environment
    _environment = environment
    # the master (or the single process) dispatches users, so fixed_count is read here
    PublisherUser.fixed_count = max(0, int(_option(environment, "publishers", 1)))


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # workers only send what happened; the master keeps the table
    if any(cls.__name__ == "SSEUser" for cls in environment.user_classes):
        for name in _ALWAYS_SHOWN:
            environment.stats.get(name, _SSE)  # creates the row with 0 requests


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    """At exit (after the workers' last figures): log a summary, rewrite the CSV.

    Locust refreshes ``PREFIX_stats.csv`` / ``PREFIX_failures.csv`` every 2 s and
    not at exit, so a lost event in the last seconds of a run would be missing
    from them; they are rewritten here with the final figures (the HTML report
    is written at exit anyway).
    """
    env = _environment
    if env is None or env.runner is None or isinstance(env.runner, WorkerRunner):
        return
    entries = env.stats.entries
    ev = entries.get(("event", _SSE))
    if ev is not None:
        names = ("lost", "duplicate", "reconnect", MISSED, DISCONNECT)
        counts = {name: getattr(entries.get((name, _SSE)), "num_requests", 0) for name in names}
        p50 = ev.get_response_time_percentile(0.5) if ev.num_requests else "-"
        p99 = ev.get_response_time_percentile(0.99) if ev.num_requests else "-"
        log.info(
            "SSE summary: %d events (latency p50 %s ms, p99 %s ms), %s",
            ev.num_requests,
            p50,
            p99,
            ", ".join(f"{name} {n}" for name, n in counts.items()),
        )
    prefix = getattr(env.parsed_options, "csv_prefix", None)
    if prefix:
        writer = StatsCSV(env, PERCENTILES_TO_REPORT)
        for suffix, write in (
            ("_stats.csv", writer.requests_csv),
            ("_failures.csv", writer.failures_csv),
        ):
            with open(prefix + suffix, "w", newline="") as f:
                write(csv.writer(f))


def _read_chunks(response: Any) -> Any:
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


class SSEUser(FastHttpUser):
    """One EventSource-like subscriber; see the module docstring."""

    weight = 1

    def __init__(self, environment: Any) -> None:
        # the socket timeout must be set before FastHttpUser builds its session
        timeout = float(_option(environment, "sse_read_timeout", 60.0)) or None  # 0: none
        self.network_timeout = timeout  # type: ignore[assignment]
        super().__init__(environment)
        self.topic: str = _option(environment, "sse_topic", "bench")
        self.last_event_id: str | None = None
        self.retry_ms: int = DEFAULT_RETRY_MS
        self.next_wait: float = 0.0  # seconds before the next connection
        self.down_since: float | None = None  # when the previous stream ended
        self.seen: dict[Any, tuple[int, int]] = {}  # w -> (last s, its r)
        self._fire = environment.events.request.fire

    def wait_time(self) -> float:
        """Seconds before the next connection: the stream's ``retry``, or a refusal's
        ``Retry-After`` when longer."""
        return self.next_wait

    def _report(
        self, name: str, response_time: float = 0.0, length: int = 0, exc: Exception | None = None
    ) -> None:
        self._fire(
            request_type=_SSE,
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
            "Accept-Encoding": "identity",
        }
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        path = "/events?" + urlencode({"topic": self.topic})
        response = self.client.request("GET", path, name="/events", stream=True, headers=headers)
        raw = getattr(response, "_response", None)
        try:
            error = getattr(response, "error", None)
            if error is not None or raw is None:
                self._after_failed_open(response)
                return
            received = response.headers
            content_type = str(received.get("content-type") or "") if received else ""
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                self._report(
                    "/events content", exc=StreamError(f"{response.status_code} {content_type!r}")
                )
                self._after_failed_open(response)
                return
            if self.down_since is not None:
                self._report("reconnect", (time.time() - self.down_since) * 1000)
            self._read(response)
        finally:
            if raw is not None:
                raw.release()  # closes the socket unless the body ended cleanly

    def _after_failed_open(self, response: Any) -> None:
        # the GET row already has the failure; honour Retry-After (429/503) if longer
        if self.down_since is None:
            self.down_since = time.time()
        headers = getattr(response, "headers", None)
        retry_after = headers.get("retry-after") if headers is not None else None
        if isinstance(retry_after, str) and retry_after.strip().isdigit():
            self.next_wait = max(self.next_wait, float(retry_after))

    def _read(self, response: Any) -> None:
        parser = Parser(last_event_id=self.last_event_id or "")
        opened = time.time()
        error: Exception | None = None
        try:
            for chunk in _read_chunks(response):
                for ev in parser.feed(chunk):
                    self._dispatch(ev)
                self.last_event_id = parser.last_event_id or None
                if parser.retry is not None:
                    self.retry_ms = parser.retry
        except gevent.GreenletExit:
            raise  # the test is stopping: not an error of the stream
        except Exception as exc:
            error = (
                exc if isinstance(exc, StreamError) else StreamError(f"{type(exc).__name__}: {exc}")
            )
        self.last_event_id = parser.last_event_id or None  # empty: browsers send no header
        if parser.retry is not None:
            self.retry_ms = parser.retry
        self.next_wait = self.retry_ms / 1000
        self.down_since = time.time()
        self._report("stream end", (self.down_since - opened) * 1000, exc=error)

    def _dispatch(self, ev: Any) -> None:
        now = time.time()
        kind = ev.event
        data = ev.data
        if kind in (MISSED, DISCONNECT):
            control = read_control(kind, data)
            reason = data if control is None else control.reason
            if kind == MISSED:
                self._report(MISSED, length=len(data), exc=MissedEvents(reason))
            else:
                exc = None if reason == Reason.DRAINING else ServerDisconnect(reason)
                self._report(DISCONNECT, length=len(data), exc=exc)
            return
        try:
            body = _loads(data)
            t = float(body["t"])
            s = int(body["s"])
        except (ValueError, TypeError, KeyError):
            self._report("other", length=len(data))
            return
        self._report("event", max(0.0, (now - t) * 1000), len(data))
        w = body.get("w")
        r = body.get("r", 0)
        last = self.seen.get(w)
        if last is None:  # first event from this publisher on this user: the baseline
            self.seen[w] = (s, r)
            return
        last_s, last_r = last
        if s == last_s + 1:
            self.seen[w] = (s, r)
        elif s > last_s + 1:
            self.seen[w] = (s, r)
            gap = LostEvents("events missing from a publisher's sequence")
            for n in range(s - last_s - 1):
                self._report("lost", exc=gap)
                if n % 1000 == 999:
                    gevent.sleep(0)  # a huge gap must not starve the other users
        elif s == last_s and r != last_r:
            self.seen[w] = (s, max(r, last_r))
            self._report("republished", length=len(data))  # a resend after an unconfirmed publish
        else:
            self._report("duplicate", exc=DuplicateEvent("event received again"))


_publisher_numbers = itertools.count(1)


class PublisherUser(FastHttpUser):
    """Publishes numbered, timestamped events at ``--publish-rate`` per second."""

    fixed_count = 1

    def on_start(self) -> None:
        """Read the options (``--sse-topic``, ``--publish-rate``: ``ValueError`` unless positive)
        and ``SSE_FAST_PUBLISH_TOKEN``, and name this publisher."""
        env = self.environment
        self.topic: str = _option(env, "sse_topic", "bench")
        rate = float(_option(env, "publish_rate", 1.0))
        if rate <= 0:
            raise ValueError("--publish-rate must be positive")
        self.period = 1.0 / rate
        worker = getattr(env.runner, "worker_index", 0)
        self.w = f"{worker}-{os.getpid()}-{next(_publisher_numbers)}"
        self.s = 0  # last confirmed sequence number
        self.r = 0  # attempts so far for sequence self.s + 1
        token = os.environ.get("SSE_FAST_PUBLISH_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.next_at = time.monotonic()

    def wait_time(self) -> float:
        """Seconds until the next publish is due, keeping ``--publish-rate`` (no burst after
        falling behind)."""
        self.next_at += self.period
        now = time.monotonic()
        if self.next_at < now - self.period:
            self.next_at = now  # fell behind (slow publishes): no burst to catch up
        return max(0.0, self.next_at - now)

    @task
    def publish(self) -> None:
        """Publish the next numbered event (``t`` time, ``s`` sequence number, ``w`` publisher,
        ``r`` attempt); one not confirmed is sent again with the same number."""
        s = self.s + 1
        data = _json_text({"t": time.time(), "s": s, "w": self.w, "r": self.r})
        with self.client.post(
            "/publish",
            json={"topic": self.topic, "data": data},
            headers=self.headers,
            name="/publish",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                try:
                    ok = bool(response.json().get("ids"))
                except (ValueError, AttributeError, TypeError):
                    ok = False
            else:
                ok = False
            if ok:
                self.s = s
                self.r = 0
                response.success()
            else:
                # unconfirmed: send the same s again next time (r tells a resend apart)
                self.r += 1
                error = getattr(response, "error", None)
                why = (response.text or "") if response.status_code else repr(error)
                response.failure(f"publish not confirmed: {response.status_code} {why:.200}")
