"""Hypothesis properties: round trips, Cython/pure parity, split invariance, and
both parsers against a plain reading of the spec (``spec_parse``, the oracle)."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sse_fast import EncodeError, EventTooLarge

from ..conftest import PARITY_IMPLEMENTATIONS, as_tuples, load_implementation, needs_both
from ..support.golden import GOLDEN
from .test_parser import CORPUS

#: each implementation loaded by name: the same code in both modes (tests/conftest.py)
pytestmark = pytest.mark.implementations_by_name

IMPLS = [load_implementation(name) for name in PARITY_IMPLEMENTATIONS]

_LINE_END = re.compile(rb"\r\n|\r|\n")


def spec_parse(stream: bytes, max_event_size: int | None = None) -> SimpleNamespace:
    """The oracle: the WHATWG "event stream interpretation" read plainly, over the
    whole stream at once (no chunks, no buffers to carry over).

    Gives ``events`` as (type, data, id, retry) tuples, the ``last_event_id`` and
    ``retry`` after the stream, and ``too_large``: whether a line broke
    ``max_event_size`` (this library's bound: the data, the event type and the
    line being read, in bytes; the unfinished last line counts too). Then
    ``events`` are those dispatched before that line.
    """
    if stream.startswith(b"\xef\xbb\xbf"):
        stream = stream[3:]
    *lines, unfinished = _LINE_END.split(stream)
    events: list[tuple[str, str, str, int | None]] = []
    data: list[bytes] = []
    event_type = b""
    id_buffer = last_event_id = ""
    retry = block_retry = None
    limit = max_event_size if max_event_size is not None else float("inf")

    def result(too_large: bool) -> SimpleNamespace:
        return SimpleNamespace(
            events=events, last_event_id=last_event_id, retry=retry, too_large=too_large
        )

    for line in lines:
        if not line:  # dispatch
            last_event_id = id_buffer
            if data:
                text = b"\n".join(data).decode("utf-8", "replace")
                name = event_type.decode("utf-8", "replace") or "message"
                events.append((name, text, last_event_id, block_retry))
            data, event_type, block_retry = [], b"", None
            continue
        if sum(len(d) + 1 for d in data) + len(event_type) + len(line) > limit:
            return result(True)
        field, _, value = line.partition(b":")  # no colon: the whole line names the field
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event_type = value
        elif field == b"id" and b"\0" not in value:
            id_buffer = value.decode("utf-8", "replace")
        elif field == b"retry" and re.fullmatch(rb"[0-9]+", value):
            retry = block_retry = int(value)
        # anything else, comments (an empty field name) included, is ignored
    too_large = sum(len(d) + 1 for d in data) + len(event_type) + len(unfinished) > limit
    return result(too_large)


@pytest.mark.parametrize(("stream", "expected", "last_id"), CORPUS)
def test_oracle_reads_the_corpus(stream: bytes, expected: list, last_id: str) -> None:
    result = spec_parse(stream)
    assert (result.events, result.last_event_id, result.too_large) == (expected, last_id, False)


@pytest.mark.parametrize(("kwargs", "frame", "parsed"), GOLDEN)
def test_oracle_reads_the_golden_frames(kwargs: Any, frame: bytes, parsed: tuple | None) -> None:
    assert spec_parse(frame).events == ([parsed] if parsed else [])


# Text with the characters that matter: line ends, NUL, BOM, spaces, non-BMP.
tricky = st.characters(codec="utf-8") | st.sampled_from(
    ["\r", "\n", "\r\n", "\0", " ", ":", "\ufeff", "\U0001f600", "\u2028", "\x85"]
)
text = st.lists(tricky, max_size=40).map("".join)
single_line = text.filter(lambda s: "\r" not in s and "\n" not in s)
event_ids = single_line.filter(lambda s: "\0" not in s) | st.integers(0, 2**70)
retries = st.none() | st.integers(0, 2**70)


def normalise(data: str) -> str:
    return re.sub(r"\r\n|\r", "\n", data)


def _parse(impl: Any, chunks: list[bytes]) -> tuple[list[tuple], str, Any]:
    parser = impl.Parser()
    events: list = []
    for chunk in chunks:
        events += parser.feed(chunk)
    parser.close()
    return as_tuples(events), parser.last_event_id, parser.retry


def _random_split(data: bytes, rnd: random.Random) -> list[bytes]:
    if len(data) < 2:
        return [data]
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 8))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=False)]


@settings(max_examples=300, deadline=None)
@given(data=text, event=st.none() | single_line, id=st.none() | event_ids, retry=retries)
def test_round_trip(data: str, event: str | None, id: Any, retry: int | None) -> None:
    for impl in IMPLS:
        frame = impl.encode(data, event=event, id=id, retry=retry)
        events, last_id, last_retry = _parse(impl, [frame])
        expected_id = "" if id is None else str(id)
        assert events == [(event or "message", normalise(data), expected_id, retry)]
        assert last_id == expected_id
        assert last_retry == retry


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=60))
def test_bytes_data_round_trip(data: bytes) -> None:
    try:
        text_data = data.decode("utf-8")
    except UnicodeDecodeError:
        for impl in IMPLS:
            with pytest.raises(EncodeError) as info:
                impl.encode(data)
            assert info.value.field == "data"
        return
    for impl in IMPLS:
        assert impl.encode(data) == impl.encode(text_data)


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    ).filter(lambda v: not isinstance(v, str) and v is not None)
)
def test_json_round_trip(value: Any) -> None:
    import orjson

    for impl in IMPLS:
        (event,) = impl.Parser().feed(impl.encode(value))
        assert orjson.loads(event.data) == value


@needs_both
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.none() | text | st.binary(max_size=30) | st.integers() | st.builds(object),
    event=st.none() | text | st.integers(),
    id=st.none() | text | st.integers() | st.floats(allow_nan=False),
    retry=st.none() | st.integers(-5, 2**70) | st.booleans() | st.just(1.5),
    comment=st.none() | text,
)
def test_encoder_parity(data: Any, event: Any, id: Any, retry: Any, comment: Any) -> None:
    ext, py = IMPLS
    outcomes = []
    for impl in (ext, py):
        try:
            outcomes.append(impl.encode(data, event=event, id=id, retry=retry, comment=comment))
        except EncodeError as exc:
            outcomes.append(("EncodeError", str(exc)))
    assert outcomes[0] == outcomes[1]


@needs_both
@settings(max_examples=500, deadline=None)
@given(
    raw=st.binary(max_size=64)
    | st.lists(
        st.sampled_from(
            [
                b"\xe0\xa0\x80",
                b"\xed\x9f\xbf",
                b"\xed\xa0\x80",
                b"\xf4\x8f\xbf\xbf",
                b"\xf4\x90\x80\x80",
                b"\xc0\x80",
                b"\xc2\x80",
                b"\xf0\x90\x80\x80",
                b"\xe0\x9f\xbf",
                b"\xf5",
                b"a",
                b"\x80",
                b"abcdefgh",
            ]
        ),
        max_size=12,
    ).map(b"".join)
)
def test_utf8_validator_matches_python(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
        expected = -1
    except UnicodeDecodeError as exc:
        expected = exc.start
    for impl in IMPLS:
        assert impl.utf8_error_at(raw) == expected, impl.name


# Streams made of plausible SSE pieces, including malformed ones.
pieces = st.sampled_from(
    [
        b"data: a\n",
        b"data:b\r\n",
        b"data\n",
        b"data: \xff\xfe\n",
        b"event: e\n",
        b"event:\n",
        b"id: 1\n",
        b"id: x\x00\n",
        b"id\n",
        b"retry: 10\n",
        b"retry: x\n",
        b": c\n",
        b"\n",
        b"\r",
        b"\r\n",
        b"\xef\xbb\xbf",
        b"foo: bar\n",
        b"data: \xe2\x82",
        b"\xac\n",
        b"data: \xf0\x9f",
        b"\x98\x80\r",
        b":",
        b" ",
        b"dat",
        b"a: split\n",
    ]
) | st.binary(max_size=8)
streams = st.lists(pieces, max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(stream=streams, seed=st.integers(0, 2**32))
def test_parser_split_invariance(stream: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    for impl in IMPLS:
        whole = _parse(impl, [stream])
        assert _parse(impl, [stream[i : i + 1] for i in range(len(stream))]) == whole
        assert _parse(impl, _random_split(stream, rnd)) == whole


@settings(max_examples=400, deadline=None)
@given(stream=streams)
def test_parsers_match_the_spec_oracle(stream: bytes) -> None:
    expected = spec_parse(stream)
    for impl in IMPLS:
        assert _parse(impl, [stream]) == (expected.events, expected.last_event_id, expected.retry)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.tuples(text, st.none() | single_line, st.none() | event_ids), max_size=10),
    seed=st.integers(0, 2**32),
)
def test_many_frames_any_split(frames: list, seed: int) -> None:
    rnd = random.Random(seed)
    for impl in IMPLS:
        events = [impl.Event(d, event=e, id=i) for d, e, i in frames]
        stream = impl.encode_many(events)
        assume(len(stream) > 1)
        parsed, _, _ = _parse(impl, _random_split(stream, rnd))
        assert [(t, d) for t, d, _, _ in parsed] == [
            (e or "message", normalise(d)) for d, e, _ in frames
        ]


def _fuzz_outcome(impl: Any, chunks: list[bytes], limit: int) -> tuple[list, bool]:
    """Every event the parser gave (those carried by the error too), and whether
    it refused the stream with ``EventTooLarge``; any other ``ParseError`` fails."""
    parser = impl.Parser(max_event_size=limit)
    events: list = []
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
    except EventTooLarge as exc:
        assert exc.limit == limit and exc.size > limit, (exc.size, exc.limit)
        return as_tuples(events + exc.events), True
    parser.close()
    return as_tuples(events), False


def test_parser_fuzz_matches_the_spec_oracle() -> None:
    """Random bytes with small size limits, fed whole and in random chunks, to
    each implementation: exactly the oracle's events, and ``EventTooLarge``
    (naming the limit) exactly when the oracle finds a line past the limit."""
    rnd = random.Random(1234)
    alphabet = b"data:event:id:retry: \r\n\x00\xef\xbb\xbf\xff\xc3abc0123"
    refused = 0
    for _ in range(1500):
        stream = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 300)))
        limit = rnd.choice([16, 64, 4096])
        oracle = spec_parse(stream, limit)
        assert not (limit > len(stream) and oracle.too_large)
        for impl in IMPLS:
            for chunks in ([stream], _random_split(stream, rnd)):
                outcome = _fuzz_outcome(impl, chunks, limit)
                assert outcome == (oracle.events, oracle.too_large), (impl.name, chunks, limit)
        refused += oracle.too_large
    assert 100 < refused < 1400  # the run exercises both outcomes
