"""Compressed streams' core (``sse_fast/_compression.py``), in process: the shared
bytes of a topic decode, with the standard decoders, to exactly what each subscriber
should get, however it joined, resumed or lagged, and each write as it is sent."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast._compression import (
    CODINGS,
    Coding,
    PrivateCompressor,
    StreamDecoder,
    Written,
    available_codings,
    negotiate,
)
from tests.support.decoding import Decoder

NAMES = ["zstd", "gzip", "deflate"]


def test_every_coding_is_offered_here() -> None:
    """zstandard is a test dependency: the three codings, zstd preferred."""
    assert available_codings() == NAMES


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("gzip, deflate, br, zstd", "zstd"),  # Chromium's: the server's order decides ties
        ("gzip, deflate, br", "gzip"),
        ("deflate;q=0.9, gzip;q=0.5", "deflate"),
        ("zstd;q=0, gzip", "gzip"),
        ("*", "zstd"),
        ("*;q=0.1, gzip;q=0.2", "gzip"),
        ("br", None),
        ("identity", None),
        ("", None),
        (None, None),
        ("gzip;q=0", None),
        ("GZIP", "gzip"),
        ("gzip;q=x", None),  # cannot be read: identity, which every client takes
        ("gzip;;", None),
        (" , gzip ,", "gzip"),
    ],
)
def test_accept_encoding_chooses_the_coding(header: str | None, chosen: str | None) -> None:
    coding = negotiate(header, NAMES)
    assert (coding.name if coding else None) == chosen


def test_only_what_the_server_offers_is_chosen() -> None:
    coding = negotiate("zstd, gzip;q=0.5", ["gzip"])
    assert coding is not None and coding.name == "gzip"
    assert negotiate("zstd", []) is None


def _event(n: int, size: int = 1) -> bytes:
    """A JSON notification of the kind that repeats its keys (about 300 B each)."""
    body = {
        "type": "order.updated",
        "order": {"id": f"ord_{n:08d}", "status": "shipped", "items": n % 7, "total": n * 3},
        "customer": {"id": f"cus_{n % 50:05d}", "tier": "gold", "region": "eu-west"},
        "note": "x" * (size * (n % 13)),
    }
    return b"id: %d\nevent: order\ndata: %s\n\n" % (n, json.dumps(body).encode())


class Subscriber:
    """One stream of a topic, as the fan-out would serve it: private until the topic's
    next resynchronisation point, then the shared bytes; lagging: the shared writes it
    missed, later, in order."""

    def __init__(self, coding: Coding, first: bytes) -> None:
        self.coding = coding
        self.private: PrivateCompressor | None = coding.private()
        self.decoder = Decoder(coding.name)
        self.expected = b""
        self.decoded = b""
        #: what was sent, write by write
        self.wire: list[bytes] = []
        self.lag_from: int | None = None
        self.receive(self.private.write(first), first)

    def receive(self, wire: bytes, data: bytes) -> None:
        self.wire.append(wire)
        self.expected += data
        self.decoded += self.decoder.feed(wire)
        assert self.decoded == self.expected  # every write decodes as it arrives

    def written(self, written: Written, data: bytes) -> None:
        if self.lag_from is not None:
            return
        if self.private is None:
            self.receive(written.whole, data)
        elif written.resync:
            end, self.private = self.private.end(), None
            self.receive(end + written.body, data)
        else:
            self.receive(self.private.write(data), data)

    def leave(self, data: bytes) -> None:
        """Leave the shared bytes at a write's end and go on privately with ``data`` (a
        stream that falls behind, or closes with an event of its own), until a point."""
        assert self.private is None and self.lag_from is None
        self.private = self.coding.private(header=False)
        self.receive(self.coding.leave() + self.private.write(data), data)

    def catch_up(self, writes: list[tuple[Written, bytes]]) -> None:
        assert self.lag_from is not None and self.private is None
        missed = writes[self.lag_from :]
        self.lag_from = None
        for written, data in missed:
            self.receive(written.whole, data)


def _run(name: str, script: list[tuple[str, int]], seed: int) -> list[Subscriber]:
    """Play ``script`` on one topic: publishes (a write of 1-4 events), joins (with a
    backlog of the last events: a resume), lags (the shared writes missed, sent later),
    leaves (private bytes mid-segment, then joining again), catch-ups and resyncs."""
    coding = CODINGS[name]
    shared = coding.shared()
    rng = random.Random(seed)
    published: list[bytes] = []
    writes: list[tuple[Written, bytes]] = []
    subscribers: list[Subscriber] = []
    for action, n in script:
        if action == "publish":
            events = [_event(len(published) + i, size=rng.randint(0, 40)) for i in range(n % 4 + 1)]
            published += events
            data = b"".join(events)
            joining = any(s.private is not None for s in subscribers)
            written = shared.write(data, resync=joining or n % 5 == 0)
            writes.append((written, data))
            for subscriber in subscribers:
                subscriber.written(written, data)
        elif action == "join":  # a resume: the opening, then the last n events
            backlog = b"".join(published[-(n % 6) :]) if n % 6 else b""
            subscribers.append(Subscriber(coding, b"retry: 1000\n\n" + backlog))
        elif action == "lag" and subscribers:
            subscriber = subscribers[n % len(subscribers)]
            if subscriber.private is None and subscriber.lag_from is None:
                subscriber.lag_from = len(writes)
        elif action == "leave" and subscribers:
            subscriber = subscribers[n % len(subscribers)]
            if subscriber.private is None and subscriber.lag_from is None:
                # (never empty: a zstd frame's end never ends a write, see the module)
                subscriber.leave(b"event: sse-fast-missed\ndata: {}\n\n" if n % 2 else b": \n\n")
        elif action == "catch_up" and subscribers:
            subscriber = subscribers[n % len(subscribers)]
            if subscriber.lag_from is not None:
                subscriber.catch_up(writes)
    for subscriber in subscribers:  # the end: everyone catches up
        if subscriber.lag_from is not None:
            subscriber.catch_up(writes)
    return subscribers


_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["publish", "publish", "publish", "join", "lag", "leave", "catch_up"]),
        st.integers(0, 1000),
    ),
    max_size=60,
)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(script=_ACTIONS, seed=st.integers(0, 2**32))
def test_random_joins_resumes_lags_and_publishes_decode_as_identity(
    name: str, script: list[tuple[str, int]], seed: int
) -> None:
    """Whatever the interleaving, each subscriber's bytes decode (zlib, zstandard) to its
    identity stream, each write as soon as it is sent."""
    for subscriber in _run(name, script, seed):
        assert subscriber.decoded == subscriber.expected


@pytest.mark.parametrize("name", NAMES)
def test_shared_bytes_are_the_same_for_subscribers_that_joined_apart(name: str) -> None:
    """Subscribers that joined at different moments (one resuming with a backlog, one
    lagging and catching up) send the very same shared bytes once they are in step."""
    script = [("join", 0), ("publish", 1), ("publish", 2), ("join", 3), ("publish", 3)]
    script += [("lag", 0), ("publish", 1), ("publish", 2), ("join", 0), ("publish", 4)]
    script += [("catch_up", 0), ("publish", 1), ("publish", 2)]
    subscribers = _run(name, script, seed=7)
    assert len(subscribers) == 3
    for subscriber in subscribers:
        assert subscriber.decoded == subscriber.expected
    # the last two publishes: every subscriber in step, the same bytes on every wire
    assert all(s.private is None and s.lag_from is None for s in subscribers)
    assert len({tuple(s.wire[-2:]) for s in subscribers}) == 1


@pytest.mark.parametrize("name", NAMES)
def test_a_shared_context_compresses_repeated_events_better(name: str) -> None:
    """The point of sharing: events that repeat their keys compress to fewer bytes with
    the topic's context than each on its own."""
    coding = CODINGS[name]
    shared = coding.shared()
    events = [_event(n) for n in range(200)]
    with_context = sum(len(shared.write(e).whole) for e in events)
    alone = sum(len(coding.independent(e)) for e in events)
    identity = sum(map(len, events))
    assert with_context < alone < identity


@pytest.mark.parametrize("name", NAMES)
def test_independent_writes_decode_after_any_stream(name: str) -> None:
    """One compressor serves every topic with few subscribers: its output decodes in any
    stream standing at a block boundary, whatever came before."""
    coding = CODINGS[name]
    first, second = Decoder(name), Decoder(name)
    one, two = coding.private(), coding.private()
    assert first.feed(one.write(b"retry: 5\n\n")) == b"retry: 5\n\n"
    assert second.feed(two.write(b": hello\n\n")) == b": hello\n\n"
    ended = [one.end(), two.end()]
    for n in range(5):
        out = coding.independent(_event(n))
        # zstd: the frame of the write before is left open: ``leave`` ends it
        assert first.feed((ended[0] if n == 0 else coding.leave()) + out) == _event(n)
        assert second.feed((ended[1] if n == 0 else coding.leave()) + out) == _event(n)


def test_a_private_compressor_ended_refuses_writes() -> None:
    private = CODINGS["gzip"].private()
    private.write(b"data: x\n\n")
    private.end()
    assert private.end() == b""
    with pytest.raises(RuntimeError, match="sends shared bytes"):
        private.write(b"data: y\n\n")


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_that_joins_at_once_sends_its_header_first(name: str) -> None:
    """A stream with nothing private (it joins at a point right away) still starts with
    its coding's header."""
    coding = CODINGS[name]
    shared = coding.shared()
    shared.write(_event(1))
    private = coding.private()
    written = shared.write(_event(2), resync=True)
    decoder = Decoder(name)
    assert decoder.feed(private.end() + written.body) == _event(2)


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_closing_mid_segment_ends_its_own_bytes(name: str) -> None:
    """A stream in step that closes with an event of its own (a disconnect's reason)
    leaves the shared bytes, sends it privately and ends: zstd's last frame is ended
    (httpx refuses a response whose zstd data is incomplete)."""
    coding = CODINGS[name]
    shared = coding.shared()
    private = coding.private()
    wire = private.end() + shared.write(_event(1), resync=True).body
    wire += shared.write(_event(2)).whole
    closing = coding.private(header=False)
    goodbye = b"event: sse-fast-disconnect\ndata: {}\n\n"
    wire += coding.leave() + closing.write(goodbye) + closing.end()
    decoder = Decoder(name)
    assert decoder.feed(wire) == _event(1) + _event(2) + goodbye
    if name == "zstd":
        assert decoder._frame is None  # every frame ended: nothing incomplete


@pytest.mark.parametrize("name", NAMES)
def test_the_clients_decoder_reads_every_kind_of_write(name: str) -> None:
    """``StreamDecoder`` (loadgen's): a stream's header, independent writes with the
    frame left open, shared segments, a leave, a private part, the end."""
    coding = CODINGS[name]
    shared = coding.shared()
    decoder = StreamDecoder(name.upper())
    events = [_event(n) for n in range(6)]
    wire = [
        coding.header + coding.independent(events[0]),
        coding.leave() + shared.write(events[1], resync=True).body,
        shared.write(events[2]).whole,
        shared.write(events[3], resync=True).whole,
        coding.leave() + coding.independent(events[4]),
        coding.leave() + coding.independent(events[5]) + coding.leave(),
    ]
    for write, event in zip(wire, events, strict=True):
        assert decoder.feed(write) == event


def test_the_clients_decoder_names_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="cannot decode Content-Encoding 'br'"):
        StreamDecoder("br")


@pytest.mark.parametrize("name", NAMES)
def test_a_stream_compressor_for_embedders_flushes_each_write(name: str) -> None:
    """``sse_fast.compression.StreamCompressor``: chosen from a request's header, each
    write decodes whole (with httpx's decoder too), its end completes the stream."""
    from sse_fast.compression import StreamCompressor

    compressor = StreamCompressor.negotiate(f"{name}, identity;q=0.1")
    assert compressor is not None and compressor.coding == name
    assert compressor.headers == [("Content-Encoding", name), ("Vary", "Accept-Encoding")]
    decoder = Decoder(name)
    for n in range(20):
        assert decoder.feed(compressor.compress(_event(n))) == _event(n)
    assert decoder.feed(compressor.end()) == b"" and decoder.ended()
    with pytest.raises(RuntimeError, match="has ended"):
        compressor.compress(b"data: late\n\n")


def test_a_stream_compressor_says_what_it_cannot_do() -> None:
    from sse_fast.compression import StreamCompressor

    assert StreamCompressor.negotiate("br") is None
    assert StreamCompressor.negotiate(None) is None
    assert StreamCompressor.negotiate("zstd, gzip", offered=("gzip",)).coding == "gzip"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="cannot compress with 'br'"):
        StreamCompressor("br")
    with pytest.raises(ValueError, match="window_bits must be 9-15"):
        StreamCompressor("gzip", window_bits=20)


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_compressed_send_wraps_an_asgi_response(name: str) -> None:
    """``CompressedSend``: the start gets the coding and Vary (no Content-Length), each
    body message is compressed, the last ends the stream; with no compressor, Vary only."""
    import asyncio

    from sse_fast.compression import CompressedSend, StreamCompressor

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def main(compressor: StreamCompressor | None) -> None:
        wrapped = CompressedSend(send, compressor)
        start = [(b"content-type", b"text/event-stream"), (b"content-length", b"9")]
        await wrapped({"type": "http.response.start", "status": 200, "headers": start})
        for n in range(3):
            await wrapped({"type": "http.response.body", "body": _event(n), "more_body": True})
        await wrapped({"type": "http.response.body", "body": b"", "more_body": False})

    asyncio.run(main(StreamCompressor(name)))
    headers = dict(sent[0]["headers"])
    assert headers[b"content-encoding"] == name.encode() and b"content-length" not in headers
    assert headers[b"vary"] == b"accept-encoding"
    decoder = Decoder(name)
    assert [decoder.feed(m["body"]) for m in sent[1:4]] == [_event(n) for n in range(3)]
    decoder.feed(sent[4]["body"])
    assert decoder.ended()
    sent.clear()
    asyncio.run(main(None))
    assert b"content-encoding" not in dict(sent[0]["headers"])
    assert [m["body"] for m in sent[1:4]] == [_event(n) for n in range(3)]
