"""``POST /publish/stream``: many publishes over one request, acknowledged in order.

For publishers that send many events (a notification service: one event per
user, thousands a second) a request per event costs more than the event. Here
one long-lived request carries newline-delimited JSON (``Content-Type:
application/x-ndjson``): each line is a publish body exactly as ``POST
/publish`` takes it (one event, or ``{"events": [...]}``). The response
(200, ``application/x-ndjson``) streams one acknowledgement per line, in order,
while the body is still coming:

    {"line":1,"ids":["1795..."]}
    {"line":2,"error":"line: data is required ...","status":400}
    ...
    {"done":true,"published":1999,"failed":1}

* **Per line, the rules of /publish.** The credential is checked once, at the
  start (401/403 refuse the whole request, before any line is read); each line
  is parsed and validated alone, its topics checked against the credential,
  and is at most ``max_body_bytes`` long. A bad line gets its error and the
  lines after it still publish. Blank lines are skipped (not acknowledged);
  line numbers count every line of the body, from 1.
* **Acknowledged means published.** A line's ack is written after the hub
  published it. A publisher that disconnects mid-body loses nothing it was
  acked for; lines it sent but saw no ack for may or may not have been
  published: give events ids (``"id"``) and resend them, a repeated id is not
  published twice (see "Retries" in ``brokers/_sequencing.py``).
* **Back-pressure, never an unbounded buffer.** The next chunk of the body is
  read only once the previous one is published and its acks are handed to the
  server; the ASGI server does not read the socket meanwhile, so a publisher
  faster than the edge is slowed by TCP. A publisher that does not read its
  acks stalls the stream (we stop reading its body): after
  ``catch_up_timeout`` seconds of acks not going out it is cut.
* **Rate.** ``publish_rate`` counts lines here (a line is a publish request):
  over the rate the stream is slowed, not refused.
* **The end.** After the body's last line comes the ``done`` line and the
  response ends. When the server drains, the broker is away, or the credential
  expires, the stream ends early with an error line (status 503 or 401) and no
  ``done``: what was not acked may not have been published (give events ids and
  send them again: a repeat is not published twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from .._asgi import Receive, Scope, Send
from .._core import ack_lines, requests_of_lines
from .._publish_checks import parse_publish_body
from ..hub import Hub
from ..publishing import PublishError
from ..settings import LimitSettings, StreamSettings
from ._admission import Admission
from ._auth import Authenticator, AuthError, Credential
from ._cors import Cors
from ._http import HTTPError, check_content_encoding, check_content_type, header

__all__ = ["PublishStreamEndpoint"]

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class _Ended(Exception):
    """The stream ends early: ``ack`` is its last line (no ``done``)."""

    def __init__(self, ack: dict[str, Any]) -> None:
        super().__init__(ack.get("error"))
        self.ack = ack


class PublishStreamEndpoint:
    """Many publishes over one request.

    ``Content-Type: application/x-ndjson``, one ``/publish`` body per line. Each
    line is answered while the body is still coming, in order, by one line:
    ``{"line": 1, "ids": [...]}`` or
    ``{"line": 2, "error": "...", "status": 400}``; the last answer line is
    ``{"done": true, "published": N, "failed": M}``. A bad line fails alone.

    Same credential, topic rights, ``max_body_bytes`` (per line) and
    ``publish_rate`` (per line: over it the stream is slowed, not refused) as
    ``POST /publish``.
    """

    def __init__(
        self,
        limits: LimitSettings,
        streams: StreamSettings,
        hub: Hub,
        auth: Authenticator,
        admission: Admission,
        cors: Cors,
    ) -> None:
        self.limits = limits
        self.streams = streams
        self.hub = hub
        self.auth = auth
        self.admission = admission
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        check_content_type(
            header(scope, b"content-type"),
            NDJSON_TYPES,
            "send one JSON publish per line with Content-Type: application/x-ndjson",
        )
        for key, value in scope["headers"]:  # every one: a second may name a compression
            if key.lower() == b"content-encoding":
                check_content_encoding(value.decode("latin-1"))
        try:
            credential = self.auth.publisher(header(scope, b"authorization"))
        except AuthError as exc:
            raise HTTPError.from_auth(exc) from None
        if self.hub.draining:
            raise HTTPError(
                503, "the server is shutting down; publish elsewhere", reason="draining"
            )
        started = send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/x-ndjson"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                    *self.cors.headers(scope),
                ],
            }
        )
        self.hub.send_style.observe(started)  # Granian's eager send, if this is the first
        await started
        stream = _Stream(self, credential, send)
        metrics = self.hub.metrics
        metrics.publish_streams_total += 1
        metrics.publish_streams_open += 1
        try:
            await stream.run(receive)
        except _Ended as end:
            self.hub.metrics.refuse(str(end.ack.get("reason", "publish_stream_ended")))
            with contextlib.suppress(_Gone):  # a publisher that does not read: cut
                await stream.write([orjson.dumps(end.ack) + b"\n"], more=False)
        except _Gone:
            pass
        finally:
            metrics.publish_streams_open -= 1


class _Gone(Exception):
    """The publisher left (or stalled and was cut)."""


class _Stream:
    """One publisher's stream: the body read in chunks, line by line."""

    def __init__(self, endpoint: PublishStreamEndpoint, credential: Credential, send: Send) -> None:
        self.endpoint = endpoint
        self.limits = endpoint.limits
        self.streams = endpoint.streams
        self.hub = endpoint.hub
        self.credential = credential
        self.send = send
        self.limit = self.limits.max_body_bytes
        self.number = 0  # lines seen
        self.published = 0
        self.failed = 0
        self.pending: list[bytes] = []  # the start of a line not yet complete, in pieces
        self.pending_size = 0
        self.skipping = False  # inside a line over the limit: drop up to its end
        self.limiter = endpoint.admission.publish_limiter

    async def run(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        receiving: asyncio.Future[Any] | None = None

        def drain() -> None:  # the drain started: stop waiting for the body
            if receiving is not None:
                # the wait is cancelled, not the task: if the body came first this
                # does nothing, and a cancellation of the task stays the caller's
                receiving.cancel()

        forget = self.hub.when_draining(drain)
        try:
            while True:
                if self.hub.draining:
                    raise _Ended(self._draining())
                receiving = asyncio.ensure_future(receive())
                try:
                    message = await receiving
                except asyncio.CancelledError:
                    if task.cancelling() or not self.hub.draining:
                        raise  # the task itself was cancelled
                    raise _Ended(self._draining()) from None
                finally:
                    receiving = None
                if message["type"] == "http.disconnect":
                    raise _Gone
                last = not message.get("more_body", False)
                lines = self.split(message.get("body", b""), last)
                if lines:
                    await self.write(await self.publish(lines), more=True)
                if last:
                    done = {"done": True, "published": self.published, "failed": self.failed}
                    await self.write([orjson.dumps(done) + b"\n"], more=False)
                    return
        finally:
            forget()

    # ---------------------------------------------------------------- lines
    #
    # A line is an entry [number, requests, ack]: requests while valid and not yet
    # published, ack (the encoded ack line) once known; failed lines have no
    # requests and an ack from the start.

    def split(self, chunk: bytes, last: bool) -> list[list[Any]]:
        """The complete lines of ``chunk`` (with what came before), parsed."""
        if self.pending and not self.skipping:
            end = chunk.find(b"\n")
            if end < 0 and not last:  # still inside the line: keep the piece, no rescan
                self.pending.append(chunk)
                self.pending_size += len(chunk)
                if self.pending_size > self.limit:
                    self.pending, self.pending_size = [], 0
                    self.number += 1
                    self.skipping = True
                    return [self._failed(self.number, 413, self._too_long())]
                return []
            chunk = b"".join(self.pending) + chunk
            self.pending, self.pending_size = [], 0
        pieces = chunk.split(b"\n")
        rest = pieces.pop()  # after the last newline: the start of a line
        if self.skipping and pieces:
            del pieces[0]  # the end of a line over the limit (already answered)
            self.skipping = False
        out: list[list[Any]] = []
        if self.skipping:
            return out
        if last and rest:
            pieces.append(rest)  # the last line needs no newline
            rest = b""
        self.take(pieces, out)
        if len(rest) > self.limit:
            self.number += 1
            out.append(self._failed(self.number, 413, self._too_long()))
            self.skipping = True
        elif not last and rest:
            self.pending, self.pending_size = [rest], len(rest)
        return out

    def take(self, lines: list[bytes], out: list[list[Any]]) -> None:
        """Parse and check ``lines`` (the next ones of the body) into ``out``."""
        number = self.number
        limit, limits, credential = self.limit, self.limits, self.credential
        # the topics of each line are checked unless the credential may publish anywhere
        check_publish = None if credential.publishes_anywhere else self.endpoint.auth.check_publish
        # the lines of the common shapes, all valid, parsed in one call; None for the
        # others (blank, too long, an error to word), taken one by one below
        parsed = requests_of_lines(
            lines,
            limit,
            limits.max_topic_length,
            limits.max_last_event_id_length,
            limits.max_events_per_batch,
        )
        if check_publish is None and None not in parsed:  # every line valid: no checks left
            out += [[n, requests, None] for n, requests in enumerate(parsed, number + 1)]
            self.number = number + len(parsed)
            return
        for line, requests in zip(lines, parsed, strict=True):
            number += 1
            try:
                if requests is None:
                    if not line or line.isspace():
                        continue  # blank: skipped, not acknowledged
                    if len(line) > limit:
                        out.append(self._failed(number, 413, self._too_long()))
                        continue
                    requests = parse_publish_body(line, limits, "line")
                if check_publish is not None:
                    check_publish(credential, requests)
            except PublishError as exc:
                out.append(self._failed(number, exc.status, str(exc)))
            except AuthError as exc:
                out.append(self._failed(number, exc.status, exc.message))
            else:
                out.append([number, requests, None])
        self.number = number

    @staticmethod
    def _failed(number: int, status: int, message: str) -> list[Any]:
        ack = {"line": number, "error": message, "status": status}
        return [number, None, orjson.dumps(ack) + b"\n"]

    def _too_long(self) -> str:
        return f"line exceeds the limit of {self.limit} bytes (max_body_bytes)"

    # ---------------------------------------------------------------- publishing

    async def publish(self, lines: list[list[Any]]) -> list[bytes]:
        """Publish the valid lines (together when they can be), in order."""
        expires = self.credential.expires_at
        if expires is not None and self.endpoint.auth.clock() >= expires:
            raise _Ended(
                self._end(401, "the credential expired; reconnect with a fresh one", "expired")
            )
        valid = [line for line in lines if line[1] is not None]
        if valid:
            if self.limiter.rate > 0:
                for _ in valid:
                    await self._admit()
            # groups of at most max_events_per_batch events: one broker publish each
            limit = self.limits.max_events_per_batch
            group: list[list[Any]] = []
            size = 0
            for line in valid:
                if group and size + len(line[1]) > limit:
                    await self._publish_lines(group)
                    group, size = [], 0
                group.append(line)
                size += len(line[1])
            await self._publish_lines(group)
        acks = [line[2] for line in lines]
        failed = sum(1 for line in lines if line[1] is None)
        if failed:
            self.hub.metrics.refuse("bad_publish", failed)
        self.failed += failed
        self.published += len(lines) - failed
        return acks

    async def _admit(self) -> None:
        limiter = self.limiter
        while True:
            if self.hub.draining:  # no waiting out the rate past the drain
                raise _Ended(self._draining())
            wait = limiter.take(self.credential.identity)
            if not wait:
                return
            await asyncio.sleep(min(wait, 0.25))

    async def _publish_lines(self, lines: list[list[Any]]) -> None:
        requests = [r for line in lines for r in line[1]]
        try:
            ids = await self.hub.publish(requests, checked=True)
        except PublishError as exc:
            if exc.retry_after is not None:  # the broker is away: the stream ends
                raise _Ended(self._end(exc.status, str(exc), "unavailable")) from None
            if len(lines) > 1:  # one line's fault (the topic limit, say): each its answer
                for line in lines:
                    await self._publish_lines([line])
                return
            (line,) = lines
            line[:] = self._failed(line[0], exc.status, str(exc))
            return
        ack_lines(lines, ids)  # each line's {"line": n, "ids": [...]}

    # ---------------------------------------------------------------- writing

    def _draining(self) -> dict[str, Any]:
        return self._end(503, "the server is shutting down", "draining")

    def _end(self, status: int, message: str, reason: str) -> dict[str, Any]:
        return {
            "error": f"{message}; lines not acknowledged may not have been published: "
            "send them again (with ids, a repeat is not published twice)",
            "status": status,
            "reason": reason,
        }

    async def write(self, acks: list[bytes], more: bool) -> None:
        body = b"".join(acks)
        result = self.send({"type": "http.response.body", "body": body, "more_body": more})
        if self.hub.send_style.written(result):
            return  # Granian: handed over at once
        try:
            async with asyncio.timeout(self.streams.catch_up_timeout):
                await result
        except TimeoutError:
            self.hub.metrics.stall_disconnects_total += 1
            raise _Gone from None
