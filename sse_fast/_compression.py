"""Compressed event streams: one compressor per topic whose bytes every subscriber
of the topic receives as they are (issue 56's core; the fan-out uses it).

Theory of operation
-------------------
*Content codings.* ``gzip`` (RFC 1952) and ``deflate`` (the zlib format, RFC 1950)
carry the same raw deflate data behind their own header; ``zstd`` (RFC 8878) is a
sequence of frames. A stream is cut, never closed cleanly, so no trailer is sent:
decoders hand out what they decoded as it arrives (browsers, ``zlib``,
``zstandard``).

*Flushed events.* Every piece of output ends where a decoder can hand out all it was
given: deflate's sync flush (an empty stored block) after each write, zstd's block
flush. No event waits for a buffer.

*Shared segments.* A topic's ``SharedCompressor`` compresses what the fan-out writes
to the topic once; every subscriber in step with it sends those bytes. Its output is
a series of segments: each starts at a resynchronisation point where the context is
new (deflate: a full flush, after which nothing refers to earlier data; zstd: a new
frame), so a decoder that stands at a block boundary of its own stream, whatever it
decoded before, decodes a segment from its start. Within a segment each write may
refer to everything earlier in it: that is the ratio.

*Joining.* A subscriber that joins (or resumes, or fell behind and caught up) cannot
start in the middle of a segment: the bytes there refer to data it never had. Until
the topic's next resynchronisation point it gets its own bytes from a
``PrivateCompressor`` (a small window: it lives only that long): its opening, its
backlog and the events until the point, each write flushed. At the point its private
part is ended on a boundary (``PrivateCompressor.end``: zstd ends its frame), and
from there on it sends the shared bytes. ``SharedCompressor.write(data,
resync=True)`` starts a segment and returns the bytes in two parts: ``lead`` ends
the segment before (those in step send ``lead + body``), ``body`` starts the new one
(those joining there send ``body``).

*Leaving.* A stream in step may leave the shared bytes at any write's end (it fell
behind, or it closes with an event of its own): deflate streams stand at a block
boundary after every write, and a zstd stream ends the frame under way by itself
with an empty last block (``Coding.leave``: the frames carry no checksum and no
size, so those three bytes end any of them). It then goes on privately, and may
join again at a later point.

*Independent writes.* A topic with few subscribers would pay a whole compressor for
one stream (zlib's default state is 256 KiB). ``independent`` compresses one write
with no context before or after it (deflate: a full flush; zstd: a frame of its
own), so one compressor per worker serves every such topic, and any stream at a
block boundary decodes its output (zstd: after ``leave``, see below).

*No zstd frame ends at the end of a write* but a stream's last: an independent
write's frame is left open, and what the stream sends next starts with ``leave``
(which ends it), so a frame's end is always followed by more bytes in the same
write. Some decoders only go on to a next frame when its bytes come with the end of
the one before (httpx 0.28's: its decoder, once at a frame's end with nothing more,
refuses the next write).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "CODINGS",
    "Coding",
    "PrivateCompressor",
    "SharedCompressor",
    "StreamDecoder",
    "Written",
    "accept_encoding",
    "available_codings",
    "make_codings",
    "negotiate",
]

#: gzip's header: no name, no time, unknown OS (RFC 1952)
_GZIP_HEADER = bytes.fromhex("1f8b08000000000000ff")
#: the zlib format's header: deflate, a 32 KiB window, no dictionary (RFC 1950)
_ZLIB_HEADER = bytes.fromhex("7801")
#: a zstd block header: last block, raw, 0 bytes (RFC 8878 3.1.1.2)
_ZSTD_LAST_EMPTY_BLOCK = b"\x01\x00\x00"


class Written(NamedTuple):
    """One write of a shared compressor: ``lead`` (the end of the segment before, when
    this write starts a new one; else empty) and ``body``; ``resync``: it starts a
    segment (a joining stream sends its ``body`` after ``PrivateCompressor.end``)."""

    lead: bytes
    body: bytes
    resync: bool
    #: what a subscriber in step with the compressor sends (``lead + body``, made once
    #: for all of them)
    whole: bytes


class SharedCompressor:
    """A topic's compressor for one coding: its writes, in segments (see the module)."""

    def __init__(self, coding: Coding, level: int | None = None) -> None:
        self.coding = coding
        self.level = coding.level if level is None else level
        self._compressor = coding._shared(self.level)
        #: uncompressed bytes written since the segment began
        self.segment_bytes = 0
        #: segments begun (the first with the first write)
        self.segments = 0

    def write(self, data: bytes, resync: bool = False) -> Written:
        """Compress ``data`` (flushed: a decoder hands it all out); ``resync``: begin a
        new segment with it (the first write always does)."""
        lead = b""
        resync = resync or self.segments == 0
        if resync:
            if self.segments:
                lead = self.coding._end_segment(self)
            self.segments += 1
            self.segment_bytes = 0
        self.segment_bytes += len(data)
        body = self.coding._write(self._compressor, data)
        return Written(lead, body, resync, lead + body if lead else body)


class PrivateCompressor:
    """One stream's own bytes until it joins its topic's shared ones (see the module):
    the coding's header first, then each write flushed; ``end`` at the point."""

    def __init__(self, coding: Coding, header: bool = True, window: int | None = None) -> None:
        self.coding = coding
        self._compressor: Any = coding._private(coding.private_window if window is None else window)
        self._header = coding.header if header else b""

    def write(self, data: bytes) -> bytes:
        """``data`` compressed in this stream's context, flushed (the header before the
        first)."""
        if self._compressor is None:
            raise RuntimeError("this private compressor was ended: the stream sends shared bytes")
        out = self._header + self.coding._write(self._compressor, data)
        self._header = b""
        return out

    def end(self) -> bytes:
        """End the private part on a boundary where a shared segment may follow (zstd:
        the frame's end; deflate: nothing, every write ended on one); the compressor is
        dropped."""
        compressor, self._compressor = self._compressor, None
        if compressor is None:
            return b""
        return self._header + self.coding._end_private(compressor)


class Coding:
    """A content coding: its name, the header a stream starts with, its compressors."""

    def __init__(self, name: str, level: int, private_window: int) -> None:
        self.name = name
        #: the level of a topic's shared compressor (and of independent writes)
        self.level = level
        #: log2 of a private compressor's window (short-lived, one per joining stream)
        self.private_window = private_window

    @property
    def header(self) -> bytes:
        """What a stream of this coding starts with (gzip's and zlib's headers; none for
        zstd, whose frames carry their own)."""
        return b""

    def shared(self, level: int | None = None) -> SharedCompressor:
        """A topic's compressor."""
        return SharedCompressor(self, level)

    def private(self, header: bool = True, window: int | None = None) -> PrivateCompressor:
        """A stream's own compressor (``header``: its stream starts here; ``window``:
        log2 of its window, 9-15, default ``private_window``)."""
        return PrivateCompressor(self, header, window)

    def independent(self, data: bytes) -> bytes:
        """``data`` compressed with no context before or after (see the module)."""
        raise NotImplementedError

    def leave(self) -> bytes:
        """What a stream in step sends to leave the shared bytes at the end of a write,
        so that private bytes may follow (see the module)."""
        return b""

    # what each coding does (the compressors above call these)

    def _shared(self, level: int) -> Any:
        raise NotImplementedError

    def _private(self, window: int) -> Any:
        raise NotImplementedError

    def _write(self, compressor: Any, data: bytes) -> bytes:
        raise NotImplementedError

    def _end_segment(self, shared: SharedCompressor) -> bytes:
        raise NotImplementedError

    def _end_private(self, compressor: Any) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Coding {self.name}>"


class _Deflate(Coding):
    """gzip and deflate: raw deflate data behind the format's header."""

    def __init__(self, name: str, header: bytes, level: int = 6, private_window: int = 12):
        super().__init__(name, level, private_window)
        self._header_bytes = header
        self._independent = zlib.compressobj(level, zlib.DEFLATED, -15, 8)

    @property
    def header(self) -> bytes:
        return self._header_bytes

    def independent(self, data: bytes) -> bytes:
        compressor = self._independent
        return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)

    def _shared(self, level: int) -> Any:
        return zlib.compressobj(level, zlib.DEFLATED, -15, 8)

    def _private(self, window: int) -> Any:
        # memLevel 1 up to a 4 KiB window (12 KB each); above it, zlib's default 8
        return zlib.compressobj(self.level, zlib.DEFLATED, -window, 1 if window <= 12 else 8)

    def _write(self, compressor: Any, data: bytes) -> bytes:
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[no-any-return]

    def _end_segment(self, shared: SharedCompressor) -> bytes:
        # an empty stored block, and nothing after it refers to what came before
        return shared._compressor.flush(zlib.Z_FULL_FLUSH)  # type: ignore[no-any-return]

    def _end_private(self, compressor: Any) -> bytes:
        return b""  # every write ended with a sync flush: a block boundary


class _Zstd(Coding):
    """zstd: a segment is a frame (``zstandard``, installed with the ``zstd`` extra).
    Each compressor has a context of its own: ``zstandard``'s streams made by one
    ``ZstdCompressor`` share its one context, and would corrupt each other."""

    def __init__(self, level: int = 3, private_window: int = 12) -> None:
        super().__init__("zstd", level, private_window)
        import zstandard

        self._z = zstandard
        # no checksum, no content size: an empty last block ends any frame (``leave``)
        self._independent = self._compressor(level=level)
        #: private compressors' parameters by window: a small window, and tables to
        #: match (level 3's own, hash 2^17 and chain 2^16, took 840 KB per stream; with
        #: a 4 KiB window these take about 60 KB; zstd's smallest context is about
        #: 33 KB, a private deflate compressor 12 KB)
        self._private_params: dict[int, Any] = {}

    def _compressor(self, **options: Any) -> Any:
        return self._z.ZstdCompressor(write_checksum=False, write_content_size=False, **options)

    def leave(self) -> bytes:
        return _ZSTD_LAST_EMPTY_BLOCK

    def independent(self, data: bytes) -> bytes:
        # a frame of its own, left open: the next write ends it (``leave``) before its own
        frame = self._independent.compressobj()
        return frame.compress(data) + frame.flush(self._z.COMPRESSOBJ_FLUSH_BLOCK)  # type: ignore[no-any-return]

    def _shared(self, level: int) -> Any:
        return _ZstdFrames(self._compressor(level=level), self._z)

    def _private(self, window: int) -> Any:
        params = self._private_params.get(window)
        if params is None:
            zstandard = self._z
            tables = max(zstandard.HASHLOG_MIN, zstandard.CHAINLOG_MIN, window - 2)
            params = self._private_params[window] = zstandard.ZstdCompressionParameters.from_level(
                self.level,
                window_log=max(zstandard.WINDOWLOG_MIN, window),
                hash_log=tables,
                chain_log=tables,
                write_checksum=False,
                write_content_size=False,
            )
        return _ZstdFrames(self._z.ZstdCompressor(compression_params=params), self._z)

    def _write(self, compressor: Any, data: bytes) -> bytes:
        return compressor.write(data)  # type: ignore[no-any-return]

    def _end_segment(self, shared: SharedCompressor) -> bytes:
        return shared._compressor.end()  # type: ignore[no-any-return]

    def _end_private(self, compressor: Any) -> bytes:
        return compressor.end()  # type: ignore[no-any-return]


class _ZstdFrames:
    """A series of zstd frames: writes flushed within the current one; ``end`` closes it
    (the next write opens another)."""

    def __init__(self, context: Any, zstandard: Any) -> None:
        self._context = context
        self._frame: Any = None
        self._block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        self._finish = zstandard.COMPRESSOBJ_FLUSH_FINISH

    def write(self, data: bytes) -> bytes:
        if self._frame is None:
            self._frame = self._context.compressobj()
        frame = self._frame
        return frame.compress(data) + frame.flush(self._block)  # type: ignore[no-any-return]

    def end(self) -> bytes:
        frame, self._frame = self._frame, None
        if frame is None:
            return b""
        return frame.flush(self._finish)  # type: ignore[no-any-return]


def _zstd_or_none() -> Coding | None:
    try:
        return _Zstd()
    except ImportError:  # the zstd extra is not installed: not offered
        return None


def make_codings(names: Sequence[str] = ("zstd", "gzip", "deflate")) -> dict[str, Coding]:
    """New codings of ``names`` (in that order) that this process has: each with its
    own compressor for independent writes, so one set belongs to one event loop (a
    hub's). zstd is left out without ``zstandard``."""
    made: dict[str, Coding] = {}
    for name in names:
        coding = (
            _zstd_or_none()
            if name == "zstd"
            else _Deflate(name, _GZIP_HEADER if name == "gzip" else _ZLIB_HEADER)
            if name in ("gzip", "deflate")
            else None
        )
        if coding is not None:
            made[name] = coding
    return made


#: every coding this server may offer, in its order of preference (zstd when
#: ``zstandard`` is installed): for one thread's use (a hub makes its own)
CODINGS: dict[str, Coding] = make_codings()


def available_codings() -> list[str]:
    """The codings this process can offer, preferred first."""
    return list(CODINGS)


def accept_encoding(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The ``Accept-Encoding`` of an ASGI scope's ``headers``: every line of it, joined
    as one list (HTTP allows several), or None."""
    values = [
        bytes(value).decode("latin-1")
        for name, value in headers
        if bytes(name).lower() == b"accept-encoding"
    ]
    return ", ".join(values) if values else None


_ITEM = re.compile(r"^\s*([A-Za-z0-9_*-]+)\s*(?:;\s*q\s*=\s*([0-9.]+)\s*)?$")


def negotiate(
    accept_encoding: str | None, offered: Sequence[str] | Mapping[str, Coding]
) -> Coding | None:
    """The coding of ``offered`` (names, or codings by name: the server's order of
    preference) that ``Accept-Encoding`` accepts with the highest weight (ties: the
    server's order); None for identity: no header, nothing acceptable, or a header
    that cannot be read. Names are looked up in ``CODINGS``."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        if not item.strip():
            continue
        match = _ITEM.match(item)
        if match is None:
            return None
        try:
            weight = 1.0 if match.group(2) is None else float(match.group(2))
        except ValueError:
            return None
        weights[match.group(1).lower()] = weight
    codings = offered if isinstance(offered, Mapping) else CODINGS
    best: tuple[float, int] | None = None
    chosen = None
    for rank, name in enumerate(offered):
        weight = weights.get(name, weights.get("*", 0.0))
        if weight <= 0 or name not in codings:
            continue
        if best is None or weight > best[0]:
            best, chosen = (weight, rank), name
    return None if chosen is None else codings[chosen]


class StreamDecoder:
    """A client's decoder of one compressed stream (``Content-Encoding`` gzip, deflate or
    zstd), fed as bytes arrive: what each write holds comes out whole (the server
    flushes every write); zstd's frames one after another. ``ValueError`` for a coding
    it does not know; zstd needs ``zstandard``."""

    def __init__(self, coding: str) -> None:
        name = coding.strip().lower()
        self.coding = name
        self._zlib: Any = None
        self._frame: Any = None
        self._zstd: Any = None
        if name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(31)
        elif name == "deflate":
            self._zlib = zlib.decompressobj(15)
        elif name == "zstd":
            try:
                import zstandard
            except ImportError:
                raise ValueError(
                    "the stream is zstd: pip install zstandard (or the zstd extra)"
                ) from None
            self._zstd = zstandard.ZstdDecompressor()
        else:
            raise ValueError(f"cannot decode Content-Encoding {coding!r}")

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of ``data`` (``zlib.error`` or ``zstandard.ZstdError`` when
        they are not of the coding)."""
        if self._zlib is not None:
            return self._zlib.decompress(data)  # type: ignore[no-any-return]
        out = b""
        while data:
            if self._frame is None:
                self._frame = self._zstd.decompressobj()
            out += self._frame.decompress(data)
            data = b""
            if self._frame.eof:
                data, self._frame = self._frame.unused_data, None
        return out
