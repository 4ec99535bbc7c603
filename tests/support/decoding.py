"""A client's decoder of a compressed event stream, made of the standard decoders only
(``zlib``, ``zstandard``): what the tests hold the server's bytes against; beside
it, httpx's own decoder of the coding (what ``sse_fast.client`` and most Python
clients read with), which must hand out the same bytes write by write."""

from __future__ import annotations

import zlib
from typing import Any

import zstandard
from httpx._decoders import DeflateDecoder, GZipDecoder, ZStandardDecoder

#: httpx's decoder of each coding
HTTPX = {"gzip": GZipDecoder, "deflate": DeflateDecoder, "zstd": ZStandardDecoder}

__all__ = ["Decoder"]


class Decoder:
    """A client's decoder of one coding, fed as bytes arrive (zstd: frame after frame)."""

    def __init__(self, name: str, httpx: bool = True) -> None:
        self.name = name
        self._httpx: Any = HTTPX[name]() if httpx else None
        self._zlib: Any = None
        if name != "zstd":
            self._zlib = zlib.decompressobj(31 if name == "gzip" else 15)
        self._frame: Any = None

    def feed(self, data: bytes) -> bytes:
        out = self._feed(data)
        if self._httpx is not None:
            assert self._httpx.decode(data) == out, "httpx's decoder reads otherwise"
        return out

    def _feed(self, data: bytes) -> bytes:
        if self._zlib is not None:
            out = self._zlib.decompress(data)
            assert not self._zlib.eof  # a stream is cut, never ended
            return out  # type: ignore[no-any-return]
        out = b""
        while data:
            if self._frame is None:
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            out += self._frame.decompress(data)
            data = b""
            if self._frame.eof:
                data, self._frame = self._frame.unused_data, None
        return out

    def ended(self) -> bool:
        """Nothing left half-decoded: every zstd frame ended (a deflate stream is cut,
        never ended: always true)."""
        if self._httpx is not None:
            self._httpx.flush()  # raises when it holds an unfinished frame
        return self._zlib is not None or self._frame is None
