"""``POST /publish/stream``: many publishes over one request, acknowledged in order.

For publishers that send many events (a notification service: one event per
user, thousands a second) a request per event costs more than the event. Here
one long-lived request carries newline-delimited JSON (``Content-Type:
application/x-ndjson``): each line is a publish body exactly as ``POST
/publish`` takes it (one event, or ``{"events": [...]}``). The response
(200, ``application/x-ndjson``) streams one acknowledgement per line, in order,
while the body is still coming:

    {"line":1,"ids":["1795..."]}
    {"line":2,"error":"body: data is required ...","status":400}
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
  published twice (see ``Hub.publish``).
* **Back-pressure, never an unbounded buffer.** The next chunk of the body is
  read only once the previous one is published and its acks are handed to the
  server; the ASGI server does not read the socket meanwhile, so a publisher
  faster than the edge is slowed by TCP. A publisher that does not read its
  acks stalls the stream (we stop reading its body): after
  ``catch_up_timeout`` seconds of acks not going out it is cut.
* **Rate.** ``publish_rate`` counts lines here (a line is a publish request):
  over the rate the stream is slowed, not refused.
* **The end.** After the body's last line comes the ``done`` line and the
  response ends. When the server drains, or the credential expires, the stream
  ends early with an error line (status 503 or 401) and no ``done``: what was
  not acked was not published.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from ..asgi import Message, Receive, Scope, Send
from ..auth import Authenticator, AuthError, Credential
from ..hub import Hub
from ..publishing import PublishError, PublishRequest, parse_publish_body
from ..settings import Settings
from .admission import Admission
from .cors import Cors
from .http import HTTPError, header

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "")


class _Ended(Exception):
    """The stream ends early: ``ack`` is its last line (no ``done``)."""

    def __init__(self, ack: dict[str, Any]) -> None:
        super().__init__(ack.get("error"))
        self.ack = ack


class _Line:
    __slots__ = ("ack", "number", "requests")

    def __init__(self, number: int) -> None:
        self.number = number
        self.requests: list[PublishRequest] = []
        self.ack: dict[str, Any] | None = None

    def fail(self, status: int, message: str) -> None:
        self.ack = {"line": self.number, "error": message, "status": status}


class PublishStreamEndpoint:
    def __init__(
        self, settings: Settings, hub: Hub, auth: Authenticator, admission: Admission, cors: Cors
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.auth = auth
        self.admission = admission
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = header(scope, b"content-type")
        if content_type is not None and content_type.split(";")[0].strip().lower() not in (
            NDJSON_TYPES
        ):
            raise HTTPError(
                415,
                f"Content-Type {content_type!r} is not supported here; send one JSON "
                "publish per line with Content-Type: application/x-ndjson",
                reason="bad_content_type",
            )
        try:
            credential = self.auth.publisher(header(scope, b"authorization"))
        except AuthError as exc:
            raise HTTPError.from_auth(exc) from None
        if self.hub.draining:
            raise HTTPError(
                503, "the server is shutting down; publish elsewhere", reason="draining"
            )
        await send(
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
        stream = _Stream(self, credential, send)
        metrics = self.hub.metrics
        metrics.publish_streams_total += 1
        metrics.publish_streams_open += 1
        try:
            await stream.run(receive)
        except _Ended as end:
            await stream.write([end.ack], more=False)
            self.hub.metrics.refuse(str(end.ack.get("reason", "publish_stream_ended")))
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
        self.settings = endpoint.settings
        self.hub = endpoint.hub
        self.credential = credential
        self.send = send
        self.limit = self.settings.max_body_bytes
        self.number = 0  # lines seen
        self.published = 0
        self.failed = 0
        self.pending = b""  # the start of a line not yet complete
        self.skipping = False  # inside a line over the limit: drop up to its end

    async def run(self, receive: Receive) -> None:
        receiving: asyncio.Task[Message] | None = None
        try:
            while True:
                receiving = asyncio.ensure_future(receive())
                while not receiving.done():
                    await asyncio.wait({receiving}, timeout=0.5)
                    if self.hub.draining and not receiving.done():
                        raise _Ended(self._end(503, "the server is shutting down", "draining"))
                message = receiving.result()
                receiving = None
                if message["type"] == "http.disconnect":
                    raise _Gone
                last = not message.get("more_body", False)
                lines = self.split(message.get("body", b""), last)
                if lines:
                    await self.write(await self.publish(lines), more=True)
                if last:
                    done = {"done": True, "published": self.published, "failed": self.failed}
                    await self.write([done], more=False)
                    return
        finally:
            if receiving is not None and not receiving.done():
                receiving.cancel()

    # ---------------------------------------------------------------- lines

    def split(self, chunk: bytes, last: bool) -> list[_Line]:
        """The complete lines of ``chunk`` (with what came before), parsed."""
        out: list[_Line] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            piece = chunk[start:end]
            start = end + 1
            if self.skipping:
                self.skipping = False
                self.pending = b""
                continue
            line = self.pending + piece if self.pending else piece
            self.pending = b""
            self.take(line, out)
        rest = chunk[start:]
        if not self.skipping and rest:
            if len(self.pending) + len(rest) > self.limit:
                self.number += 1
                item = _Line(self.number)
                item.fail(413, self._too_long())
                out.append(item)
                self.pending = b""
                self.skipping = True
            else:
                self.pending += rest
        if last:
            if self.pending:
                self.take(self.pending, out)
            self.pending = b""
        return out

    def take(self, line: bytes, out: list[_Line]) -> None:
        self.number += 1
        if not line.strip():
            return  # blank: skipped, not acknowledged
        item = _Line(self.number)
        out.append(item)
        if len(line) > self.limit:
            item.fail(413, self._too_long())
            return
        try:
            item.requests = parse_publish_body(line, self.settings, "line")
            self.endpoint.auth.check_publish(
                self.credential, {t for r in item.requests for t in r.topics}
            )
        except PublishError as exc:
            item.fail(exc.status, str(exc))
        except AuthError as exc:
            item.fail(exc.status, exc.message)

    def _too_long(self) -> str:
        return f"line exceeds the limit of {self.limit} bytes (max_body_bytes)"

    # ---------------------------------------------------------------- publishing

    async def publish(self, lines: list[_Line]) -> list[dict[str, Any]]:
        """Publish the valid lines (together when they can be), in order."""
        expires = self.credential.expires_at
        if expires is not None and time.time() >= expires:
            raise _Ended(
                self._end(401, "the credential expired; reconnect with a fresh one", "expired")
            )
        valid = [line for line in lines if line.ack is None]
        for _ in valid:
            await self._admit()
        if valid:
            await self._publish_together(valid)
        acks = []
        for line in lines:
            assert line.ack is not None
            if "ids" in line.ack:
                self.published += 1
            else:
                self.failed += 1
                self.hub.metrics.refuse("bad_publish")
            acks.append(line.ack)
        return acks

    async def _admit(self) -> None:
        limiter = self.endpoint.admission.publish_limiter
        while True:
            wait = limiter.take(self.credential.identity)
            if not wait:
                return
            await asyncio.sleep(wait)

    async def _publish_together(self, lines: list[_Line]) -> None:
        requests = [r for line in lines for r in line.requests]
        try:
            ids = await self.hub.publish(requests, checked=True)
        except PublishError as exc:
            if exc.status >= 500:  # the broker is away: every line gets it, the stream ends
                raise _Ended(self._end(exc.status, str(exc), "unavailable")) from None
            if len(lines) > 1:  # one line's fault: find it, publish the others
                for line in lines:
                    await self._publish_together([line])
                return
            lines[0].fail(exc.status, str(exc))
            return
        start = 0
        for line in lines:
            count = len(line.requests)
            line.ack = {"line": line.number, "ids": ids[start : start + count]}
            start += count

    # ---------------------------------------------------------------- writing

    def _end(self, status: int, message: str, reason: str) -> dict[str, Any]:
        return {
            "error": f"{message}; lines not acknowledged were not published: send them again",
            "status": status,
            "reason": reason,
        }

    async def write(self, acks: list[dict[str, Any]], more: bool) -> None:
        body = b"".join(orjson.dumps(ack) + b"\n" for ack in acks)
        result = self.send({"type": "http.response.body", "body": body, "more_body": more})
        if self.hub.send_style.written(result):
            return  # Granian: handed over at once
        try:
            await asyncio.wait_for(result, self.settings.catch_up_timeout)
        except asyncio.TimeoutError:
            self.hub.metrics.stall_disconnects_total += 1
            raise _Gone from None
