"""Publishing from Python to an sse_fast server, the fast way and safely.

    from sse_fast.publisher import Publisher

    async with Publisher("http://127.0.0.1:8000", token="...") as publisher:
        event_id = await publisher.publish("user/42", {"text": "hello"})
        ids = await publisher.publish_many(
            [{"topic": f"user/{n}", "data": {"n": n}} for n in range(5000)]
        )
        async with publisher.stream() as stream:       # POST /publish/stream
            for n in range(100_000):
                ack = await stream.send({"topic": f"user/{n}", "data": n, "id": f"n-{n}"})
        # every ack resolved: stream.published / stream.failed

Three paths, from the cheapest per request to the cheapest per event:
``publish`` (one ``POST /publish``; calls made while requests are in flight
go together in the next one, each answered alone), ``publish_many`` (batches of up to
``batch_size`` events per request) and ``stream`` (one long request, one ack
per event). Connections are kept alive and reused (``connections`` at most).
Batches are split to stay within ``max_body_bytes`` (set it to the server's);
an event that no body could carry is refused here with status 413, unsent.
Inside the server's own process, use ``app.hub.publish`` instead: no HTTP.

Retries. A publish that failed before it was sent (the connection could not be
opened), or was refused with 429 (over the rate: not published), is retried
after a backoff, up to ``retries`` times. A publish that may have happened (the
connection dropped after sending, a timeout, a 503 from a broker that did not
answer) is retried only when every event has an ``id``: the server publishes
an id it saw on the same topics in the last minutes only once, so the retry
cannot duplicate it. Without ids it raises ``PublishFailed`` saying the
publish may or may not have happened. 4xx errors raise at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson

from ._http11 import ChunkedDecoder, read_head
from ._publish_batches import BATCH_OVERHEAD as _BATCH_OVERHEAD
from ._publish_batches import PublishBatches
from ._publish_batches import batch_body as _batch
from ._tasks import running_loop

__all__ = ["PublishFailed", "PublishStream", "Publisher"]


class PublishFailed(Exception):
    """A publish the server refused (``status``: the HTTP status) or that could not
    be completed; ``maybe_published`` when it may have happened anyway."""

    def __init__(self, message: str, status: int = 0, maybe_published: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.maybe_published = maybe_published


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


def _event(
    topic: str | Sequence[str],
    data: Any,
    event: str | None,
    id: str | None,
    retry: int | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"topic": topic} if isinstance(topic, str) else {"topics": list(topic)}
    out["data"] = data
    if event is not None:
        out["event"] = event
    if id is not None:
        out["id"] = id
    if retry is not None:
        out["retry"] = retry
    return out


class Publisher:
    """A client of a server's publish endpoints (``url``, with ``token`` when it needs one),
    reusing at most ``connections`` kept-alive connections; see the module docstring for batches
    and retries. ``ValueError`` for a ``url`` that is not http:// or https://."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        connections: int = 4,
        batch_size: int = 1000,
        max_body_bytes: int = 1024 * 1024,
        coalesce: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: give the server's http:// or https:// address")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl_module.create_default_context() if parts.scheme == "https" else None
        self.base = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.batch_size = batch_size
        #: the server's max_body_bytes: larger batches are split, a larger event
        #: is refused here (413) without sending it
        self.max_body_bytes = max_body_bytes
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)
        #: ``publish`` calls made while requests are in flight go together in the next one
        #: (``_publish_batches.py``); ``coalesce=False``: one request per call
        self.coalesce = coalesce
        self.batches = PublishBatches(
            self._post, connections, batch_size, max_body_bytes, _failed_as_call
        )

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send the ``publish`` calls queued, wait for their answers, and close the idle
        connections (``async with`` does it on exit)."""
        await self.batches.close()
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _headers(self, content_type: str) -> str:
        lines = f"Host: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
        if self.token:
            lines += f"Authorization: Bearer {self.token}\r\n"
        return lines

    async def _open(self) -> _Connection:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        return _Connection(reader, writer)

    # ---------------------------------------------------------------- one request

    async def publish(
        self,
        topic: str | Sequence[str],
        data: Any,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> str:
        """Publish one event; return its id. Calls made while requests are in flight go
        together in the next request, each with its own answer (a bad event fails alone),
        the events of a topic in the order of the calls (``_publish_batches.py``)."""
        body = self._encoded(_event(topic, data, event, id, retry), wrapped=False)
        if not self.coalesce:
            (event_id,) = await self._post(body, idempotent=id is not None)
            return event_id
        return await self.batches.publish(body, (topic,) if isinstance(topic, str) else topic, id)

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Publish events (each as ``POST /publish`` takes one) in batches of up to
        ``batch_size`` events and ``max_body_bytes``, in order; return their ids. A
        batch is published whole or not at all; a failing batch raises, after the
        batches before it were published."""
        out: list[str] = []
        batch: list[bytes] = []
        size = _BATCH_OVERHEAD
        idempotent = True
        for one in events:
            encoded = self._encoded(one, wrapped=True)
            if batch and (
                len(batch) >= self.batch_size or size + len(encoded) + 1 > self.max_body_bytes
            ):
                out += await self._post(_batch(batch), idempotent)
                batch, size, idempotent = [], _BATCH_OVERHEAD, True
            batch.append(encoded)
            size += len(encoded) + 1
            idempotent = idempotent and one.get("id") is not None
        if batch:
            out += await self._post(_batch(batch), idempotent)
        return out

    def _encoded(self, event: Mapping[str, Any], wrapped: bool) -> bytes:
        """One event as JSON; refused here (413) when its body (``wrapped`` in a
        batch, or alone: a body, a stream line) would be over the server's limit."""
        encoded = orjson.dumps(event)
        if len(encoded) + (_BATCH_OVERHEAD if wrapped else 0) > self.max_body_bytes:
            raise PublishFailed(
                f"event of {len(encoded)} bytes is over the server's body limit "
                f"(max_body_bytes {self.max_body_bytes}); nothing was sent. Publish "
                "smaller events, or raise max_body_bytes on the server and here",
                413,
            )
        return encoded

    async def _post(self, body: bytes, idempotent: bool) -> list[str]:
        request = (
            f"POST {self.base}/publish HTTP/1.1\r\n{self._headers('application/json')}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        attempt = 0
        while True:
            try:
                status, headers, reply = await self._exchange(request)
            except _NotSent as exc:
                failure = PublishFailed(f"could not reach the server: {exc.__cause__!r}")
                safe = True
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                hint = (
                    "; a body this large may have been refused (413): is the server's "
                    f"max_body_bytes smaller than {self.max_body_bytes}?"
                    if len(body) > 65536 and isinstance(exc, ConnectionError)
                    else ""
                )
                failure = PublishFailed(
                    f"no answer from the server ({exc!r}): the publish may or may not have "
                    "happened"
                    + ("" if idempotent else " (give events ids to retry safely)")
                    + hint,
                    maybe_published=True,
                )
                safe = idempotent
            else:
                if status == 200:
                    ids: list[str] = orjson.loads(reply)["ids"]
                    return ids
                message = _error(reply) or f"HTTP {status}"
                failure = PublishFailed(message, status, maybe_published=status == 503)
                safe = status == 429 or (status == 503 and idempotent)
                if safe and attempt < self.retries:
                    try:
                        wait = min(float(headers.get("retry-after", "")), 30.0)
                    except ValueError:  # absent, or an HTTP date: our own backoff
                        wait = self.backoff * 2**attempt
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
            if not safe or attempt >= self.retries:
                raise failure
            await asyncio.sleep(self.backoff * 2**attempt)
            attempt += 1

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        async with self._slots:
            connection = None
            while self._idle:
                kept = self._idle.pop()
                if kept.reader.at_eof() or kept.writer.is_closing():
                    kept.close()  # the server closed it while idle
                else:
                    connection = kept
                    break
            if connection is None:
                try:
                    connection = await self._open()
                except (TimeoutError, OSError) as exc:
                    raise _NotSent from exc
            try:
                connection.writer.write(request)
                async with asyncio.timeout(self.timeout):
                    status, headers = await read_head(connection.reader)
                length = int(headers.get("content-length", "0"))
                async with asyncio.timeout(self.timeout):
                    reply = await connection.reader.readexactly(length)
            except BaseException:
                connection.close()
                raise
            if headers.get("connection", "").lower() == "close":
                connection.close()
            else:
                self._idle.append(connection)
            return status, headers, reply

    # ---------------------------------------------------------------- streaming

    def stream(self, max_in_flight: int = 1000) -> PublishStream:
        """``POST /publish/stream``: ``await stream.send(event)`` returns a future
        of the event's ids (resolved with its ack, or failed with
        ``PublishFailed``). ``send`` waits while ``max_in_flight`` events are not
        yet acked (what is in flight is what a retry may have to resend, and how
        long the last one waits). Leaving the ``async with`` ends the body and
        waits for every ack, as long as acks keep coming (``PublishFailed`` after
        ``timeout`` seconds without one)."""
        return PublishStream(self, max_in_flight)


def _failed_as_call(error: Exception, status: int, maybe_published: bool) -> PublishFailed:
    """What a call of a request that failed raises (``PublishBatches``)."""
    return PublishFailed(str(error), status, maybe_published)


class _NotSent(Exception):
    """The request could not be sent (no connection): safe to retry."""


def _error(reply: bytes) -> str | None:
    with contextlib.suppress(ValueError, TypeError, KeyError):
        message = orjson.loads(reply)["error"]
        return str(message)
    return None


class PublishStream:
    """One ``POST /publish/stream`` request (see ``Publisher.stream``)."""

    def __init__(self, publisher: Publisher, max_in_flight: int = 1000) -> None:
        self.publisher = publisher
        self.max_in_flight = max(1, max_in_flight)
        self._room = asyncio.Event()
        self.published = 0
        self.failed = 0
        self._waiting: dict[int, asyncio.Future[list[str]]] = {}
        self._line = 0
        self._reader_task: asyncio.Task[None] | None = None
        self._connection: _Connection | None = None
        self._ended: BaseException | None = None

    async def __aenter__(self) -> PublishStream:
        p = self.publisher
        self._connection = await p._open()
        self._connection.writer.write(
            (
                f"POST {p.base}/publish/stream HTTP/1.1\r\n"
                f"{p._headers('application/x-ndjson')}Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        self._reader_task = asyncio.get_running_loop().create_task(self._read_acks())
        return self

    async def send(self, event: Mapping[str, Any]) -> asyncio.Future[list[str]]:
        """Queue one event (waits while the server is behind: TCP back-pressure)."""
        while len(self._waiting) >= self.max_in_flight and self._ended is None:
            self._room.clear()
            await self._room.wait()
        if self._ended is not None:
            raise PublishFailed(f"the stream ended: {self._ended}")
        assert self._connection is not None
        line = self.publisher._encoded(event, wrapped=False) + b"\n"
        self._line += 1
        future: asyncio.Future[list[str]] = running_loop().create_future()
        self._waiting[self._line] = future
        writer = self._connection.writer
        writer.write(b"%x\r\n%s\r\n" % (len(line), line))
        await writer.drain()
        return future

    async def publish(
        self,
        topic: str | Sequence[str],
        data: Any,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> asyncio.Future[list[str]]:
        """``send`` of one event built from the arguments (as ``Publisher.publish`` takes them)."""
        return await self.send(_event(topic, data, event, id, retry))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None and self._reader_task is not None
        try:
            if kind is None and self._ended is None:
                self._connection.writer.write(b"0\r\n\r\n")
                with contextlib.suppress(ConnectionError):
                    await self._connection.writer.drain()
                await self._wait_for_acks()
        finally:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
            self._connection.close()
            self._fail_rest(PublishFailed("the stream ended before its ack", maybe_published=True))

    async def _wait_for_acks(self) -> None:
        """Wait for the acks still due and the done line, as long as they keep
        coming: ``PublishFailed`` after ``timeout`` seconds without one."""
        assert self._reader_task is not None
        while True:
            before = self.published + self.failed
            done, _ = await asyncio.wait({self._reader_task}, timeout=self.publisher.timeout)
            if done:
                await self._reader_task  # its error, if the stream failed
                return
            if self.published + self.failed == before:
                raise PublishFailed(
                    f"no ack from the server for {self.publisher.timeout:g} s; "
                    f"{len(self._waiting)} events may or may not have been published",
                    maybe_published=True,
                )

    async def _read_acks(self) -> None:
        assert self._connection is not None
        reader = self._connection.reader
        try:
            status, headers = await read_head(reader)
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            decoder = ChunkedDecoder()
            buffer = b""
            if status != 200:
                body = await reader.read(65536)
                text = decoder.feed(body) if chunked else body
                raise PublishFailed(_error(text) or f"HTTP {status}", status)
            while True:
                data = await reader.read(65536)
                if not data:
                    raise PublishFailed("the server closed the stream", maybe_published=True)
                buffer += decoder.feed(data) if chunked else data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line:
                        self._ack(orjson.loads(line))
                if b'"done":true' in data:
                    return
                if decoder.finished:  # the response ended without its done line
                    raise PublishFailed("the server ended the stream early", maybe_published=True)
        except BaseException as exc:
            self._ended = exc
            self._room.set()
            self._fail_rest(
                exc if isinstance(exc, PublishFailed) else PublishFailed(repr(exc), 0, True)
            )
            raise

    def _ack(self, ack: dict[str, Any]) -> None:
        line = ack.get("line")
        if line is None:
            if "error" in ack:  # the stream ends early (draining, broker away, expired)
                raise PublishFailed(ack["error"], int(ack.get("status", 0)), maybe_published=True)
            return  # the done line
        future = self._waiting.pop(line, None)
        self._room.set()
        if "ids" in ack:
            self.published += 1
            if future is not None and not future.done():
                future.set_result(ack["ids"])
        else:
            self.failed += 1
            if future is not None and not future.done():
                future.set_exception(PublishFailed(ack["error"], int(ack.get("status", 0))))
                future.exception()  # retrieved: the caller may not look

    def _fail_rest(self, error: PublishFailed) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
                future.exception()
