"""Compressed streams in the hub (``hub/_coding.py``), in process: a stream that asks
for a coding gets what an identity stream of the same topic gets, decoded with the
standard decoders write by write, however it joined (early, late, resumed), fell
behind or ended; a topic's streams in step send the very same bytes; which streams
are compressed, and the figures."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast.app import App
from sse_fast.hub import PublishRequest, Subscription
from sse_fast.hub._coding import RESYNC_SECONDS, SHARED_FROM

from ..support.asgi_harness import Stream, make_app, publish, run, settle
from ..support.security_harness import SECRET, token

CODINGS = ["zstd", "gzip", "deflate"]


def _stream(app: object, *topics: str, coding: str | None = None, **kw: object) -> Stream:
    headers = {} if coding is None else {"accept-encoding": coding}
    headers.update(kw.pop("headers", {}))  # type: ignore[arg-type]
    return Stream(app, query=[("topic", t) for t in topics], headers=headers, **kw).start()  # type: ignore[arg-type]


def _payload(n: int) -> dict[str, object]:
    """A notification that repeats its keys (what compression is for)."""
    return {"type": "order.updated", "order": {"id": f"ord_{n:06d}", "status": "shipped"}, "n": n}


def _beats_left_out(raw: bytes | bytearray) -> bytes:
    return re.sub(rb"(\n\n)(: \n\n)+", rb"\1", bytes(raw))


class Clock:
    """The hub's clock, moved by the test (the resynchronisation schedule reads it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("coding", CODINGS)
def test_a_compressed_stream_decodes_to_what_an_identity_stream_gets(
    coding: str, eager: bool
) -> None:
    async def main() -> None:
        app = make_app()
        plain = _stream(app, "t", eager=eager)
        packed = _stream(app, "t", coding=coding, eager=eager)
        await settle()
        assert packed.headers["content-encoding"] == coding
        assert packed.headers["vary"] == "accept-encoding"
        assert "content-encoding" not in plain.headers and plain.headers["vary"]
        for i in range(40):
            publish(app, "t", _payload(i))
            await settle(3)
        await settle()
        assert packed.data() == plain.data()
        assert len(plain.events) == 40
        assert bytes(packed.raw) == bytes(plain.raw)  # the opening, every event, byte for byte
        # alone on its topic: independent writes (no compressor kept for one stream)
        assert sum(len(chunk) for chunk in packed.wire) < len(plain.raw)
        for s in (plain, packed):
            s.disconnect()
            await s.finished()
        assert app.hub.subscriptions == {}

    run(main())


@pytest.mark.parametrize("coding", CODINGS)
def test_streams_in_step_share_the_topics_bytes_and_joiners_join_at_a_point(
    coding: str,
) -> None:
    """From ``SHARED_FROM`` streams on, the topic compresses once: every stream in step
    is handed the same bytes object. Streams that join later (one resuming) get
    independent writes until the next point, then the same shared bytes; each decodes
    to what an identity stream gets."""

    async def main() -> None:
        clock = Clock()
        app = make_app()
        app.hub.clock = app.hub.fanout.clock = clock
        plain = _stream(app, "t")
        first = [_stream(app, "t", coding=coding) for _ in range(SHARED_FROM)]
        await settle()
        for i in range(5):
            publish(app, "t", _payload(i))
            await settle(3)
        topic = app.hub.topics.by_name["t"]
        group = topic.coded.groups[coding]
        assert group.shared is not None and len(group.in_step) == SHARED_FROM
        resume_from = plain.events[2].id
        later = [_stream(app, "t", coding=coding) for _ in range(3)]
        resumed = _stream(app, "t", coding=coding, headers={"last-event-id": resume_from})
        await settle()
        assert resumed.headers["sse-fast-resume"] == "resumed"
        publish(app, "t", _payload(5))
        await settle()
        # in step: no point yet (a segment under way, young): the joiners wait
        assert len(group.joining) == 4 and len(group.in_step) == SHARED_FROM
        clock.now += RESYNC_SECONDS
        publish(app, "t", _payload(6))
        await settle()
        assert not group.joining and len(group.in_step) == SHARED_FROM + 4
        publish(app, "t", _payload(7))
        await settle()
        last = [s.wire[-1] for s in [*first, *later, resumed]]
        assert all(chunk is last[0] for chunk in last)  # one bytes object for all
        expected = plain.data()
        assert len(expected) == 8
        # in step, each event refers to those before it: a fraction of the bytes
        assert len(first[0].wire[-1]) < 0.5 * len(plain.events[-1].data)
        for s in first:
            assert s.data() == expected
        for s in later:
            assert s.data() == expected[5:]
        assert resumed.data() == expected[3:]
        for s in [plain, *first, *later, resumed]:
            s.disconnect()
            await s.finished()
        assert group.shared is None and not topic.coded  # gone with its last stream

    run(main())


@pytest.mark.parametrize("coding", CODINGS)
def test_a_compressed_stream_that_falls_behind_catches_up_and_steps_in_again(
    coding: str,
) -> None:
    async def main() -> None:
        clock = Clock()
        app = make_app()
        app.hub.clock = app.hub.fanout.clock = clock
        plain = _stream(app, "t")
        streams = [_stream(app, "t", coding=coding, capacity=2) for _ in range(SHARED_FROM)]
        await settle()
        publish(app, "t", _payload(0))
        await settle()
        slow = streams[0]
        slow.pause()
        for i in range(1, 30):
            publish(app, "t", _payload(i))
            await settle(2)
        state = app.hub.stats(True)["connection_list"]
        assert Subscription.CATCHING_UP in [c["state"] for c in state]
        slow.resume()
        await settle(50)
        clock.now += RESYNC_SECONDS
        for i in range(30, 33):
            publish(app, "t", _payload(i))
            await settle()
        group = app.hub.topics.by_name["t"].coded.groups[coding]
        assert len(group.in_step) == SHARED_FROM  # back in step
        for s in streams:
            assert s.data() == plain.data()
            assert len(s.events) == 33
        for s in [plain, *streams]:
            s.disconnect()
            await s.finished()

    run(main())


async def _in_step(coding: str) -> tuple[App, list[Stream]]:
    """An app whose topic t has ``SHARED_FROM`` streams of ``coding``, in step with its
    shared compressor after one event."""
    app = make_app()
    streams = [_stream(app, "t", coding=coding) for _ in range(SHARED_FROM)]
    await settle()
    publish(app, "t", _payload(0))
    await settle()
    assert len(app.hub.topics.by_name["t"].coded.groups[coding].in_step) == SHARED_FROM
    return app, streams


@pytest.mark.parametrize("coding", CODINGS)
def test_heartbeats_keep_a_topics_streams_in_step(coding: str) -> None:
    async def main() -> None:
        app, streams = await _in_step(coding)
        group = app.hub.topics.by_name["t"].coded.groups[coding]
        assert app.hub.heartbeat() == SHARED_FROM
        publish(app, "t", _payload(1))
        await settle()
        assert len(group.in_step) == SHARED_FROM
        for s in streams:
            assert s.raw.count(b"\n\n: \n\n") == 1 and len(s.events) == 2
            s.disconnect()
            await s.finished()

    run(main())


@pytest.mark.parametrize("coding", CODINGS)
def test_a_server_side_close_ends_the_compressed_stream_whole(coding: str) -> None:
    """A drain's last frame decodes, and the stream's end is one a checking decoder
    takes (zstd: every frame ended, the shared one it was in step with too)."""

    async def main() -> None:
        app, streams = await _in_step(coding)
        await app.hub.lifecycle.drain()
        for s in streams:
            await s.finished()
            assert s.ended and [e.event for e in s.events][-1] == "sse-fast-disconnect"
            assert s.decoder is not None and s.decoder.ended()

    run(main())


def test_which_streams_are_compressed() -> None:
    """One topic: when asked. Several topics or patterns: only with ``compression=all``,
    and never when one of them is private (or may be). ``off``: none, and no Vary."""

    async def opened(app: object, *topics: str, **kw: object) -> Stream:
        s = _stream(app, *topics, coding="gzip", **kw)
        await settle()
        return s

    async def main() -> None:
        app = make_app()
        assert "content-encoding" in (await opened(app, "a")).headers
        assert "content-encoding" not in (await opened(app, "a", "b")).headers
        assert "content-encoding" not in (await opened(app, "a/*")).headers
        plain = _stream(app, "a", headers={"accept-encoding": "br, identity"})
        await settle()
        assert "content-encoding" not in plain.headers
        # the header on two lines is one list: the second line's coding is taken
        two = Stream(app, query=[("topic", "a")])
        two.scope["headers"] = [(b"accept-encoding", b"br"), (b"accept-encoding", b"gzip")]
        two.start()
        await settle()
        assert two.headers["content-encoding"] == "gzip"

        app = make_app(compression="all")
        several = await opened(app, "a", "b")
        assert several.headers["content-encoding"] == "gzip"
        assert "content-encoding" in (await opened(app, "a/*")).headers

        # a private topic's text never shares a context with another topic's
        app = make_app(compression="all", private_topics="secret/*", jwt_secret=SECRET)
        bearer = {"authorization": "Bearer " + token({"subscribe": ["secret/*"]})}
        assert "content-encoding" in (await opened(app, "a", "b")).headers
        assert "content-encoding" in (await opened(app, "secret/x", headers=bearer)).headers
        mixed = await opened(app, "a", "secret/x", headers=bearer)
        assert mixed.status == 200 and "content-encoding" not in mixed.headers
        assert "content-encoding" not in (await opened(app, "a/*", headers=bearer)).headers

        app = make_app(compression="off")
        s = await opened(app, "a")
        assert "content-encoding" not in s.headers and "vary" not in s.headers

    run(main())


def test_several_topics_compressed_with_a_context_of_their_own() -> None:
    async def main() -> None:
        app = make_app(compression="all")
        plain = _stream(app, "a", "b")
        packed = [_stream(app, "a", "b", coding=c) for c in CODINGS]
        pattern = _stream(app, "p/*", coding="zstd")
        await settle()
        for i in range(20):
            publish(app, "a" if i % 2 else "b", _payload(i))
            publish(app, f"p/{i % 3}", _payload(i))
            await settle(3)
        await settle()
        for s in packed:
            assert bytes(s.raw) == bytes(plain.raw)
        assert len(pattern.events) == 20
        app.hub.heartbeat()
        await settle()
        for s in [plain, *packed, pattern]:
            s.disconnect()
            await s.finished()

    run(main())


def test_the_figures_count_bytes_before_and_after() -> None:
    async def main() -> None:
        app = make_app()
        streams = [_stream(app, "t", coding="gzip") for _ in range(3)]
        await settle()
        for i in range(10):
            publish(app, "t", _payload(i))
            await settle(2)
        metrics = app.hub.metrics
        before = metrics.compression_input_bytes_total["gzip"]
        after = metrics.compression_output_bytes_total["gzip"]
        assert before == sum(len(s.raw) for s in streams)
        assert after == sum(sum(len(c) for c in s.wire) for s in streams)
        text = app.operations.render_metrics()
        assert f'sse_fast_compression_input_bytes_total{{coding="gzip"}} {before}' in text
        for s in streams:
            s.disconnect()
            await s.finished()

    run(main())


_SCRIPT = st.lists(
    st.tuples(
        st.sampled_from(
            ["publish", "publish", "publish", "join", "resume", "pause", "read", "tick", "beat"]
        ),
        st.integers(0, 1000),
    ),
    max_size=50,
)


@pytest.mark.parametrize("coding", CODINGS)
@settings(max_examples=60, deadline=None)
@given(script=_SCRIPT)
def test_random_joins_resumes_lags_and_publishes_decode_as_identity(
    coding: str, script: list[tuple[str, int]]
) -> None:
    """The hub's compressed streams under random interleavings: streams join (fresh or
    resuming from an id seen), stop reading (their writes pend: catch-up), read again,
    heartbeats, the clock passes a resynchronisation point, publishes of 1-3 events at
    once. At the end every stream, read out, decoded write by write with the standard
    decoders and httpx's, has exactly the events an identity stream opened at the same
    point has (``SHARED_FROM`` is reached: the shared compressor is in play)."""

    async def main() -> None:
        clock = Clock()
        app = make_app()
        app.hub.clock = app.hub.fanout.clock = clock
        reference = _stream(app, "t")  # every event, identity
        pairs: list[tuple[Stream, Stream]] = []  # (compressed, identity) opened together

        def open_pair(last_event_id: str | None) -> None:
            headers = {} if last_event_id is None else {"last-event-id": last_event_id}
            packed = _stream(app, "t", coding=coding, capacity=2, headers=headers)
            plain = _stream(app, "t", headers=headers)
            pairs.append((packed, plain))

        for _ in range(SHARED_FROM - 1):
            open_pair(None)
        await settle()
        n = 0
        for action, k in script:
            if action == "publish":
                requests = [_payload(n + i) for i in range(k % 3 + 1)]
                n += len(requests)
                app.hub.publish_nowait(
                    [PublishRequest(("t",), data) for data in requests]  # one flush
                )
            elif action == "join":
                open_pair(None)
            elif action == "resume" and reference.events:
                open_pair(reference.events[k % len(reference.events)].id)
            elif action == "pause" and pairs:
                pairs[k % len(pairs)][0].pause()
            elif action == "read" and pairs:
                pairs[k % len(pairs)][0].resume()
            elif action == "tick":
                clock.now += RESYNC_SECONDS
            elif action == "beat":
                app.hub.heartbeat()
            await settle(3)
        for packed, _ in pairs:
            packed.resume()
        await settle(100)
        for packed, plain in pairs:
            assert packed.events == plain.events
            # heartbeats reach the streams in sync only (the paused one may have been not)
            assert _beats_left_out(packed.raw) == _beats_left_out(plain.raw)
        for stream in [reference, *(s for pair in pairs for s in pair)]:
            stream.disconnect()
        for stream in [reference, *(s for pair in pairs for s in pair)]:
            await stream.finished()
        assert app.hub.subscriptions == {}

    run(main())


@pytest.mark.parametrize("context", ["event", "stream"])
def test_the_compression_context_setting(context: str) -> None:
    """``event``: a topic's streams stay on independent writes however many; ``stream``:
    each has a compressor of its own. Either way they decode to the identity stream."""

    async def main() -> None:
        app = make_app(compression_context=context)
        plain = _stream(app, "t")
        streams = [_stream(app, "t", coding=c) for c in CODINGS * SHARED_FROM]
        await settle()
        for i in range(12):
            publish(app, "t", _payload(i))
            await settle(3)
        modes = {c["compression"] for c in app.hub.stats(True)["connection_list"]}
        assert modes == {None, "independent" if context == "event" else "own"}
        coded = app.hub.topics.by_name["t"].coded
        if context == "event":
            assert all(group.shared is None for group in coded.groups.values())
        else:
            assert coded is None or not coded
        for s in streams:
            assert bytes(s.raw) == bytes(plain.raw)
        for s in [plain, *streams]:
            s.disconnect()
            await s.finished()

    run(main())
