"""Tricky streams from the WHATWG spec and its edge cases, fed whole, byte by
byte and with the stream split at every position."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sse_fast import EventTooLarge, ParseError

from ..conftest import as_tuples

M = "message"

# (stream, expected events as (type, data, id, retry), last_event_id after the stream)
CORPUS: list[tuple[bytes, list[tuple], str]] = [
    # spec example: multi-line data
    (b"data: YHOO\ndata: +2\ndata: 10\n\n", [(M, "YHOO\n+2\n10", "", None)], ""),
    # spec example: comments, ids, an id line with no value resets the id
    (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n",
        [
            (M, "first event", "1", None),
            (M, "second event", "", None),
            (M, " third event", "", None),
        ],
        "",
    ),
    # spec example: empty data fires, two empty data lines give one LF, no final blank line
    (b"data\n\ndata\ndata\n\ndata:", [(M, "", "", None), (M, "\n", "", None)], ""),
    # spec example: space after the colon is optional
    (b"data:test\n\ndata: test\n\n", [(M, "test", "", None), (M, "test", "", None)], ""),
    # only one space is stripped
    (b"data:   three\n\n", [(M, "  three", "", None)], ""),
    # CR and CRLF line ends, mixed
    (
        b"data: a\r\rdata: b\r\n\r\ndata: c\n\r\n",
        [(M, "a", "", None), (M, "b", "", None), (M, "c", "", None)],
        "",
    ),
    (b"data: a\rdata: b\r\r", [(M, "a\nb", "", None)], ""),
    # one leading BOM is stripped; a second one is part of the field name
    (b"\xef\xbb\xbfdata: bom\n\n", [(M, "bom", "", None)], ""),
    (b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", [], ""),
    # a BOM later in the stream is data
    (b"data: \xef\xbb\xbfx\n\n", [(M, "\ufeffx", "", None)], ""),
    # event type applies to one event only
    (b"event: a\ndata: 1\n\ndata: 2\n\n", [("a", "1", "", None), (M, "2", "", None)], ""),
    # event with an empty value means message; event without data fires nothing
    (b"event:\ndata: 1\n\nevent: x\n\ndata: 2\n\n", [(M, "1", "", None), (M, "2", "", None)], ""),
    # the last event id persists across events and an id-only block updates it
    (
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\n",
        [(M, "a", "1", None), (M, "b", "1", None), (M, "c", "2", None)],
        "2",
    ),
    # id containing NUL is ignored
    (b"id: 5\n\nid: a\x00b\ndata: x\n\n", [(M, "x", "5", None)], "5"),
    # an explicit empty id resets
    (b"id: 5\n\nid:\ndata: x\n\n", [(M, "x", "", None)], ""),
    # id set in an unfinished block is not committed
    (b"id: 1\ndata: a\n\nid: 2\ndata: b", [(M, "a", "1", None)], "1"),
    # retry only when all ASCII digits
    (
        b"retry: 10a\ndata: a\n\nretry: -1\ndata: b\n\nretry:  5\ndata: c\n\nretry:\ndata: d\n\n"
        b"retry: \xd9\xa3\ndata: e\n\nretry: 007\ndata: f\n\n",
        [
            (M, "a", "", None),
            (M, "b", "", None),
            (M, "c", "", None),
            (M, "d", "", None),
            (M, "e", "", None),
            (M, "f", "", 7),
        ],
        "",
    ),
    # unknown fields and field names are case-sensitive
    (b"Data: no\nfoo: bar\ndata: yes\n\n", [(M, "yes", "", None)], ""),
    # a line with no colon is a field with an empty value
    (b"data\n\n", [(M, "", "", None)], ""),
    # colons after the first belong to the value
    (b"data: a:b: c\n\n", [(M, "a:b: c", "", None)], ""),
    # comments inside an event do not end it
    (b"data: a\n: comment\ndata: b\n\n", [(M, "a\nb", "", None)], ""),
    # invalid UTF-8 becomes U+FFFD (maximal subparts)
    (b"data: \xff\xc3(\xe2\x82\n\n", [(M, "\ufffd\ufffd(\ufffd", "", None)], ""),
    (b"event: \xc3\ndata: x\n\n", [("\ufffd", "x", "", None)], ""),
    # NUL in data is kept
    (b"data: a\x00b\n\n", [(M, "a\x00b", "", None)], ""),
    # non-BMP text
    ("data: \U0001f600\n\n".encode(), [(M, "\U0001f600", "", None)], ""),
]


def _splits(stream: bytes) -> list[list[bytes]]:
    ways = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    ways += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return ways


@pytest.mark.parametrize(("stream", "expected", "last_id"), CORPUS)
def test_corpus(impl: SimpleNamespace, stream: bytes, expected: list, last_id: str) -> None:
    for chunks in _splits(stream):
        parser = impl.Parser()
        events = []
        for chunk in chunks:
            events += parser.feed(chunk)
        parser.close()
        assert as_tuples(events) == expected, chunks
        assert parser.last_event_id == last_id


def test_cr_at_chunk_end_then_lf(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    assert parser.feed(b"data: a\r") == []
    assert as_tuples(parser.feed(b"\n\r")) == [(M, "a", "", None)]
    # the LF after the blank CR line is part of that CRLF, not another blank line
    assert parser.feed(b"\ndata: b\r") == []
    assert as_tuples(parser.feed(b"\r")) == [(M, "b", "", None)]


def test_cr_then_empty_chunk_then_lf(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert as_tuples(parser.feed(b"\n\n")) == [(M, "a", "", None)]


def test_retry_attribute_and_reconnect_state(impl: SimpleNamespace) -> None:
    parser = impl.Parser(last_event_id="41")
    assert parser.retry is None
    events = parser.feed(b"retry: 1500\n\ndata: x\n\n")
    assert parser.retry == 1500
    assert as_tuples(events) == [(M, "x", "41", None)]


def test_accepts_bytearray_and_memoryview(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    assert len(parser.feed(bytearray(b"data: a\n\n"))) == 1
    assert len(parser.feed(memoryview(b"data: b\n\n"))) == 1


def test_close_discards_and_forbids_feed(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    assert parser.feed(b"data: unfinished\n") == []
    parser.close()
    with pytest.raises(ParseError, match="after close"):
        parser.feed(b"\n")


def test_max_event_size_data(impl: SimpleNamespace) -> None:
    parser = impl.Parser(max_event_size=100)
    assert len(parser.feed(b"data: " + b"x" * 90 + b"\n\n")) == 1
    with pytest.raises(EventTooLarge) as info:
        parser.feed(b"data: ok\n\n" + (b"data: " + b"y" * 40 + b"\n") * 3)
    assert info.value.limit == 100
    assert info.value.size > 100
    assert "max_event_size" in str(info.value)
    # events completed before the error in the same chunk are not lost
    assert as_tuples(info.value.events) == [(M, "ok", "", None)]
    with pytest.raises(ParseError, match="failed earlier"):
        parser.feed(b"data: x\n\n")


def test_max_event_size_endless_line(impl: SimpleNamespace) -> None:
    parser = impl.Parser(max_event_size=1000)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            parser.feed(b"z" * 100)


def test_max_event_size_must_be_positive(impl: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="max_event_size"):
        impl.Parser(max_event_size=0)


def test_comments_do_not_count_towards_size(impl: SimpleNamespace) -> None:
    parser = impl.Parser(max_event_size=64)
    for _ in range(100):
        assert parser.feed(b": " + b"c" * 50 + b"\n") == []
    assert len(parser.feed(b"data: x\n\n")) == 1


def test_parsed_event_equality_and_repr(impl: SimpleNamespace) -> None:
    (a,) = impl.Parser().feed(b"event: t\nid: 1\ndata: d\n\n")
    (b,) = impl.Parser().feed(b"event: t\nid: 1\ndata: d\n\n")
    assert a == b
    assert repr(a) == "ParsedEvent(event='t', data='d', id='1', retry=None)"
    with pytest.raises(TypeError):
        hash(a)


def test_feed_refuses_non_bytes(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    for bad in (5, "data: x\n\n", None):
        with pytest.raises(TypeError, match="takes bytes"):
            parser.feed(bad)


def test_large_events_in_a_row(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    for size in (70_000, 70_000, 10, 200_000, 5):
        (event,) = parser.feed(b"data: " + b"x" * size + b"\n\n")
        assert len(event.data) == size


def test_size_limit_does_not_depend_on_how_the_stream_is_split(impl: SimpleNamespace) -> None:
    """Every line counts, whole or in pieces: an oversized event, or an oversized
    comment, is refused whether it comes in one chunk or byte by byte."""
    for stream in (b"data: " + b"x" * 200 + b"\n\n", b": " + b"c" * 200 + b"\n"):
        whole = impl.Parser(max_event_size=100)
        with pytest.raises(EventTooLarge):
            whole.feed(stream)
        pieces = impl.Parser(max_event_size=100)
        with pytest.raises(EventTooLarge):
            for i in range(len(stream)):
                pieces.feed(stream[i : i + 1])


def test_last_event_id_is_a_str(impl: SimpleNamespace) -> None:
    """None is refused, not carried into every event's id; the error says what to pass."""
    with pytest.raises(TypeError, match=r"last_event_id must be str \('' when there is none\)"):
        impl.Parser(last_event_id=None)
    parser = impl.Parser(last_event_id="7")
    for bad in (None, 7, b"7"):
        with pytest.raises(TypeError, match="last_event_id must be str"):
            parser.last_event_id = bad
    with pytest.raises(AttributeError):
        del parser.last_event_id
    assert as_tuples(parser.feed(b"data: x\n\n")) == [(M, "x", "7", None)]
    parser.last_event_id = "8"
    assert parser.last_event_id == "8"


def test_retry_attribute_is_an_int_or_none(impl: SimpleNamespace) -> None:
    parser = impl.Parser()
    for bad in ("10", 1.5, True):
        with pytest.raises(TypeError, match="retry must be int"):
            parser.retry = bad
    with pytest.raises(ValueError, match="negative"):
        parser.retry = -1
    with pytest.raises(AttributeError):
        del parser.retry
    parser.retry = 250
    assert parser.retry == 250
    parser.retry = None
    assert parser.retry is None


def test_max_event_size_is_read_only_and_fits_a_c_size(impl: SimpleNamespace) -> None:
    parser = impl.Parser(max_event_size=10)
    with pytest.raises(AttributeError):
        parser.max_event_size = 20  # type: ignore[misc]
    assert parser.max_event_size == 10
    for bad in (True, 2**70, 1.5, None):
        with pytest.raises(ValueError, match="max_event_size must be a positive int"):
            impl.Parser(max_event_size=bad)


def test_parsed_event_is_an_immutable_value(impl: SimpleNamespace) -> None:
    event = impl.ParsedEvent("message", "d", "1", None)
    for attribute in ("event", "data", "id", "retry"):
        with pytest.raises(AttributeError):
            setattr(event, attribute, getattr(event, attribute))
        with pytest.raises(AttributeError):
            delattr(event, attribute)
    with pytest.raises(AttributeError):
        event.extra = 1
    for args in ((None, "d", "1", None), ("message", 5, "1", None), ("message", "d", None, None)):
        with pytest.raises(TypeError, match="must be str"):
            impl.ParsedEvent(*args)
    with pytest.raises(TypeError, match="retry must be int"):
        impl.ParsedEvent("message", "d", "1", "5")
