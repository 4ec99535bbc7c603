"""Minimal HTTP/1.1 over asyncio streams (chunked or identity bodies) on our parser.

For the tests, the load tools and ``Publisher``, which need what an HTTP library
hides: the raw socket (``local_addr``, an abrupt RST with ``abort()``), byte
counts, the decoded stream as sent. One request per connection, no TLS, no
redirects, no reconnecting. Applications use ``sse_fast.client`` (on httpx).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ._core import ParsedEvent, Parser

__all__ = ["ChunkedDecoder", "HTTPResponseError", "SSEClient", "http_request", "read_head"]


class HTTPResponseError(Exception):
    """The server answered with something other than an event stream."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body


class ChunkedDecoder:
    """Incremental decoder of ``Transfer-Encoding: chunked`` bodies."""

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # bytes of chunk data still to come
        self._need_crlf = False  # the CRLF that ends a chunk's data
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` completes (a partial chunk-size line or CRLF waits for the next
        call); ``finished`` is set at the last chunk, and ``ValueError`` for a chunk-size line over
        1 KiB."""
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        out = []
        pos = 0
        size = len(data)
        while pos < size and not self.finished:
            if self._remaining:
                take = min(self._remaining, size - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                self._need_crlf = not self._remaining
            elif self._need_crlf:
                if size - pos < 2:
                    break
                pos += 2
                self._need_crlf = False
            else:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > 1024:
                        raise ValueError("chunk size line too long")
                    break
                length = int(data[pos:end].split(b";")[0], 16)
                pos = end + 2
                if length == 0:
                    self.finished = True
                else:
                    self._remaining = length
        if pos < size and not self.finished:
            self._buffer = data[pos:]
        if len(out) == 1:
            return out[0]
        return b"".join(out)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read a response's status line and headers: the status and the headers by
    lower-case name (a repeated header keeps its last value)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


def _request_bytes(
    method: str, host: str, port: int, path: str, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    # Header values as UTF-8, as browsers send Last-Event-ID (the SSE spec's reconnect).
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One complete request on a fresh connection; returns (status, headers, body);
    ``TimeoutError`` when a step (connect, head, body) takes over ``timeout`` seconds.
    ``asyncio.timeout``, not ``wait_for``: Python 3.11's ``wait_for`` lets a
    cancellation go unheard when the awaited step completes at the same moment (CI:
    a test's publishing loop went on after its cancel, and ``asyncio.run`` waited
    for it forever)."""
    all_headers = {"Connection": "close", **(headers or {})}
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_request_bytes(method, host, port, path, all_headers, body))
        async with asyncio.timeout(timeout):
            status, response_headers = await read_head(reader)
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            decoder = ChunkedDecoder()
            parts = []
            while not decoder.finished:
                async with asyncio.timeout(timeout):
                    data = await reader.read(65536)
                if not data:
                    break
                parts.append(decoder.feed(data))
            content = b"".join(parts)
        elif "content-length" in response_headers:
            async with asyncio.timeout(timeout):
                content = await reader.readexactly(int(response_headers["content-length"]))
        else:
            async with asyncio.timeout(timeout):
                content = await reader.read()
        return status, response_headers, content
    finally:
        writer.close()


class SSEClient:
    """One SSE connection: ``await connect()``, then ``await events()`` repeatedly.

    ``last_event_id`` is sent as ``Last-Event-ID`` (as a browser does on
    reconnect) and updated from the stream.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: list[str],
        *,
        last_event_id: str = "",
        headers: Mapping[str, str] | None = None,
        local_addr: str | None = None,
        path: str = "/events",
        extra_query: Mapping[str, str] | None = None,
        record: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.topics = topics
        self.last_event_id = last_event_id
        self.headers = dict(headers or {})
        self.local_addr = local_addr
        self.path = path
        self.extra_query = dict(extra_query or {})
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.closed = False
        self.bytes_received = 0
        self.record = record
        self.raw = bytearray()  # the decoded stream, when ``record`` is set
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = Parser(last_event_id=last_event_id)
        self._decoder: ChunkedDecoder | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and send the request (``Last-Event-ID`` when there is one), then read the
        response's head; ``HTTPResponseError`` (the connection closed) for a status other than 200,
        ``asyncio.TimeoutError`` past ``timeout`` seconds."""
        kwargs: dict[str, Any] = {}
        if self.local_addr:
            kwargs["local_addr"] = (self.local_addr, 0)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, **kwargs)
        self._reader, self._writer = reader, writer
        query = urlencode([("topic", t) for t in self.topics] + list(self.extra_query.items()))
        headers = {"Accept": "text/event-stream", **self.headers}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        writer.write(_request_bytes("GET", self.host, self.port, f"{self.path}?{query}", headers))
        async with asyncio.timeout(timeout):
            self.status, self.response_headers = await read_head(reader)
        if self.status != 200:
            body = b""
            if "content-length" in self.response_headers:
                body = await reader.readexactly(int(self.response_headers["content-length"]))
            self.close()
            raise HTTPResponseError(self.status, self.response_headers, body)
        if self.response_headers.get("transfer-encoding", "").lower() == "chunked":
            self._decoder = ChunkedDecoder()

    async def events(self, read_size: int = 65536) -> list[ParsedEvent]:
        """Read once more from the stream; return the events it completed (maybe
        none, e.g. for a heartbeat comment). At end of stream ``closed`` is set."""
        assert self._reader is not None, "connect() first"
        data = await self._reader.read(read_size)
        if not data:
            self.closed = True
            self._parser.close()
            self.close()
            return []
        self.bytes_received += len(data)
        if self._decoder is not None:
            data = self._decoder.feed(data)
        if self.record:
            self.raw += data
        events = self._parser.feed(data)
        self.last_event_id = self._parser.last_event_id
        if self._decoder is not None and self._decoder.finished:
            self.closed = True
            self.close()
        return list(events)

    @property
    def retry(self) -> int | None:
        """The last ``retry`` the stream sent (milliseconds), or None."""
        return self._parser.retry

    def close(self) -> None:
        """Close the connection (no-op when closed)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        """Vanish abruptly (RST), as a crashed client would."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
