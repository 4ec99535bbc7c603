"""Compressing event streams you serve yourself: a coding chosen from the request's
``Accept-Encoding``, and every write compressed and flushed, so each event reaches
the client as it is written (a compressing middleware would hold it in a buffer).

    from sse_fast.compression import StreamCompressor

    compressor = StreamCompressor.negotiate(request.headers.get("accept-encoding"))
    headers = {"Content-Type": "text/event-stream", "Vary": "Accept-Encoding"}
    if compressor is not None:
        headers["Content-Encoding"] = compressor.coding
    ...
    await write(compressor.compress(frame) if compressor else frame)  # per event
    ...
    await write(compressor.end())  # the stream's last bytes (zstd: its frame's end)

An ASGI app wraps its ``send`` instead (``CompressedSend``: the response start gets
``Content-Encoding`` and ``Vary``, each body message is compressed); the drop-ins take
``compress=True`` (``sse_fast.starlette``, ``sse_fast.aiohttp``). A stream's
compressor keeps a small window (``window_bits``, 12: 4 KiB; about 12 KB of memory
for gzip's state, 23 KB per stream all told in ``sse-fast serve``, 60 KB with zstd),
so events refer to those just before them.

For a fan-out of your own, the parts ``sse-fast serve`` compresses each topic once with
are here too: ``Coding`` (``CODINGS`` by name, ``make_codings`` for one event loop's
own), ``SharedCompressor`` (a topic's, in segments), ``PrivateCompressor`` and
``StreamDecoder`` (a client's); how they fit is in ``sse_fast/_compression.py`` and
the docs' compression page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from ._compression import (
    CODINGS,
    Coding,
    PrivateCompressor,
    SharedCompressor,
    StreamDecoder,
    Written,
    accept_encoding,
    available_codings,
    make_codings,
    negotiate,
)

__all__ = [
    "CODINGS",
    "Coding",
    "CompressedSend",
    "PrivateCompressor",
    "SharedCompressor",
    "StreamCompressor",
    "StreamDecoder",
    "Written",
    "accept_encoding",
    "available_codings",
    "make_codings",
    "negotiate",
]

#: what ``negotiate`` offers by default, preferred first (zstd only where installed)
OFFERED = ("zstd", "gzip", "deflate")


class StreamCompressor:
    """One stream's compressor: ``compress(data)`` gives bytes a client decodes whole
    as they arrive; ``end()`` the stream's last. ``coding``: ``"gzip"``, ``"deflate"``
    or ``"zstd"`` (``ValueError`` for another, or zstd without ``zstandard``);
    ``window_bits``: log2 of its window, 9-15."""

    def __init__(self, coding: str = "gzip", window_bits: int = 12) -> None:
        if not 9 <= window_bits <= 15:
            raise ValueError(f"window_bits must be 9-15, got {window_bits}")
        made = make_codings((coding,))
        if coding not in made:
            raise ValueError(
                f"cannot compress with {coding!r}: gzip, deflate, or zstd (with zstandard "
                "installed)"
            )
        #: the ``Content-Encoding`` of the stream
        self.coding = coding
        self._compressor: PrivateCompressor | None = made[coding].private(window=window_bits)

    @classmethod
    def negotiate(
        cls,
        accept_encoding: str | None,
        offered: Sequence[str] = OFFERED,
        window_bits: int = 12,
    ) -> StreamCompressor | None:
        """The compressor of the coding ``accept_encoding`` (a request's
        ``Accept-Encoding``) prefers among ``offered`` (yours first); None: send the
        stream as it is."""
        coding = negotiate(accept_encoding, [name for name in offered if name in CODINGS])
        return None if coding is None else cls(coding.name, window_bits)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The response headers that go with it."""
        return [("Content-Encoding", self.coding), ("Vary", "Accept-Encoding")]

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed and flushed: what to write now (``RuntimeError`` after
        ``end``)."""
        if self._compressor is None:
            raise RuntimeError("this stream's compressor has ended")
        return self._compressor.write(data) if data else b""

    def end(self) -> bytes:
        """The stream's last bytes (zstd: its frame's end; nothing for deflate and gzip,
        whose streams are cut, as event streams are); compress refuses afterwards."""
        compressor, self._compressor = self._compressor, None
        return b"" if compressor is None else compressor.end()


class CompressedSend:
    """An ASGI ``send`` for an event stream's response, compressed with ``compressor``
    (None: sent as it is, with ``Vary: Accept-Encoding`` only): the response start
    gets ``Content-Encoding`` and ``Vary`` (and loses any ``Content-Length``); each
    body message is compressed and flushed, the last one ends the stream."""

    def __init__(
        self,
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
        compressor: StreamCompressor | None,
    ) -> None:
        self.send = send
        self.compressor = compressor

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        compressor = self.compressor
        kind = message.get("type")
        if kind == "http.response.start":
            headers = [
                (name, value)
                for name, value in message.get("headers", ())
                if bytes(name).lower() not in (b"content-length", b"vary")
                and (compressor is None or bytes(name).lower() != b"content-encoding")
            ]
            headers.append((b"vary", b"accept-encoding"))
            if compressor is not None:
                headers.append((b"content-encoding", compressor.coding.encode()))
            message = {**message, "headers": headers}
        elif kind == "http.response.body" and compressor is not None:
            body = compressor.compress(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                body += compressor.end()
            message = {**message, "body": body}
        await self.send(message)
