"""The asyncio client's chunked decoder (used by the tests and the load generator)."""

from __future__ import annotations

import random

import pytest

from sse_fast.testing import ChunkedDecoder


def test_chunked_decoder_any_split() -> None:
    rnd = random.Random(7)
    for _ in range(1000):
        parts = [
            bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 40)))
            for _ in range(rnd.randint(0, 6))
        ]
        wire = b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"
        decoder = ChunkedDecoder()
        out = b""
        i = 0
        while i < len(wire):
            j = i + rnd.randint(1, 12)
            out += decoder.feed(wire[i:j])
            i = j
        assert out == b"".join(parts)
        assert decoder.finished


def test_chunked_decoder_refuses_endless_size_line() -> None:
    with pytest.raises(ValueError, match="too long"):
        ChunkedDecoder().feed(b"f" * 2000)
