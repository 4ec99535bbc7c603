"""The native publish checker (``requests_of``, Cython and its pure twin) against
the full check in ``sse_fast.publishing``: it takes the common shapes, never
accepts what the full check refuses, and where it accepts, answers exactly what
the full check answers. The body parser's errors are unchanged (the full check
words them)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_fast._publish_checks import parse_publish_body, parse_publish_document
from sse_fast.publishing import PublishError, PublishRequest
from sse_fast.settings import Settings

from ..conftest import PARITY_IMPLEMENTATIONS, load_implementation

IMPLS = [load_implementation(name) for name in PARITY_IMPLEMENTATIONS]
SETTINGS = Settings(max_topic_length=20, max_last_event_id_length=10, max_events_per_batch=3)
LIMITS = (
    SETTINGS.max_topic_length,
    SETTINGS.max_last_event_id_length,
    SETTINGS.max_events_per_batch,
)


def _full(document: Any) -> list[PublishRequest] | None:
    """The full check's answer: the requests, or None when it refuses."""
    try:
        return parse_publish_document(document, SETTINGS)
    except PublishError:
        return None


def _agree(document: Any) -> list[PublishRequest] | None:
    """Every implementation gives the same answer; a list only where the full check
    gives that same list."""
    answers = [impl.requests_of(document, *LIMITS) for impl in IMPLS]
    assert all(a == answers[0] for a in answers), (document, answers)
    for answer in answers:
        if answer is not None:
            assert type(answer) is list and all(type(r) is PublishRequest for r in answer)
            assert answer == _full(document), document
    return answers[0]


COMMON = [
    {"topic": "user/42", "data": {"n": 1}},
    {"topic": "a", "data": "text"},
    {"topic": "a", "data": 0},
    {"topic": "a", "data": False},
    {"topic": "a", "data": []},
    {"topic": "a:b@c!$&'()+,;=%-~.", "data": 1},
    {"topic": "x" * 20, "data": 1},
    {"topic": "a", "data": 1, "event": "note", "id": "n-1", "retry": 0},
    {"topic": "a", "data": 1, "event": None, "id": None, "retry": None},
    {"topic": "a", "data": 1, "id": "x" * 10},
    {"topic": "a", "data": 1, "retry": 5000},
    {"topic": "a", "data": 1, "event": "sse-fast"},  # not the reserved prefix
    {"events": [{"topic": "a", "data": 1}]},
    {"events": [{"topic": "a", "data": 1}, {"topic": "b", "data": 2, "id": "7"}] * 1},
    {"events": [{"topic": "a", "data": i} for i in range(3)]},
]

REFUSED = [
    None,
    [],
    "x",
    1,
    {},
    {"data": 1},
    {"topic": "a"},
    {"topic": "a", "data": None},
    {"topic": "", "data": 1},
    {"topic": "x" * 21, "data": 1},
    {"topic": "a b", "data": 1},
    {"topic": "a\nb", "data": 1},
    {"topic": "caf\u00e9", "data": 1},
    {"topic": "a\0", "data": 1},
    {"topic": 5, "data": 1},
    {"topic": ["a"], "data": 1},
    {"topic": "a", "data": 1, "extra": 1},
    {"topic": "a", "data": 1, "event": ""},
    {"topic": "a", "data": 1, "event": 5},
    {"topic": "a", "data": 1, "event": "a\nb"},
    {"topic": "a", "data": 1, "event": "a\rb"},
    {"topic": "a", "data": 1, "event": "sse-fast-missed"},
    {"topic": "a", "data": 1, "id": ""},
    {"topic": "a", "data": 1, "id": 7},
    {"topic": "a", "data": 1, "id": "x" * 11},
    {"topic": "a", "data": 1, "id": "a\0b"},
    {"topic": "a", "data": 1, "id": "a\rb"},
    {"topic": "a", "data": 1, "retry": -1},
    {"topic": "a", "data": 1, "retry": True},
    {"topic": "a", "data": 1, "retry": 1.5},
    {"topic": "a", "data": 1, "retry": "5"},
    {"events": []},
    {"events": {}},
    {"events": [{"topic": "a", "data": 1}] * 4},  # over max_events_per_batch (413)
    {"events": [{"topic": "a", "data": 1}, {"topic": "a"}]},
    {"events": [{"topic": "a", "data": 1}, 5]},
    {"events": [{"topic": "a", "data": 1}], "topic": "a"},
    {"events": [{"events": [{"topic": "a", "data": 1}]}]},
]


@pytest.mark.parametrize("document", COMMON, ids=range(len(COMMON)))
def test_the_common_shapes_are_taken_natively(document: Any) -> None:
    answer = _agree(document)
    assert answer is not None and answer == _full(document)


@pytest.mark.parametrize("document", REFUSED, ids=range(len(REFUSED)))
def test_what_the_full_check_refuses_is_left_to_it(document: Any) -> None:
    assert _full(document) is None
    assert _agree(document) is None


def test_rarer_valid_shapes_are_left_to_the_full_check() -> None:
    document = {"topics": ["a", "b"], "data": 1}
    assert _full(document) == [PublishRequest(("a", "b"), 1)]
    assert _agree(document) is None
    body = b'{"topics": ["a", "b", "a"], "data": 1}'
    assert parse_publish_body(body, SETTINGS) == [PublishRequest(("a", "b"), 1)]


def test_errors_are_still_worded_by_the_full_check() -> None:
    with pytest.raises(PublishError) as info:
        parse_publish_body(b'{"topic": "a b", "data": 1}', SETTINGS)
    assert "characters outside" in str(info.value)
    with pytest.raises(PublishError) as info:
        parse_publish_body(b'{"events": [{"topic": "a", "data": 1}, {"topic": "a"}]}', SETTINGS)
    assert str(info.value).startswith("events[1]: data is required")
    with pytest.raises(PublishError) as info:
        parse_publish_body(b'{"events": [' + b'{"topic":"a","data":1},' * 3 + b"1]}", SETTINGS)
    assert info.value.status == 413


def test_wrong_argument_types_get_the_same_answer() -> None:
    for impl in IMPLS:
        with pytest.raises(TypeError):
            impl.requests_of({"topic": "a", "data": 1}, "20", 10, 3)


# -- any document -----------------------------------------------------------------------

_text = st.text(
    alphabet=st.sampled_from("aZ9._~:/@!$&'()+,;=%- \r\n\0\u00e9"), min_size=0, max_size=12
)
_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False),
    _text,
    st.lists(st.integers(), max_size=2),
)
_field = st.sampled_from(["topic", "data", "event", "id", "retry", "topics", "extra"])
_event = st.dictionaries(
    _field,
    st.one_of(_value, st.just("sse-fast-x"), st.just("user/1"), st.just(["a", "b"])),
    max_size=6,
)
_document = st.one_of(
    _event,
    st.fixed_dictionaries({"events": st.lists(_event, min_size=0, max_size=4)}),
    st.fixed_dictionaries({"events": st.lists(_event, max_size=2)}, optional={"topic": _text}),
    _value,
)


@settings(max_examples=600, deadline=None)
@given(_document)
def test_any_document_gets_the_full_checks_answer_or_none(document: Any) -> None:
    _agree(document)


# -- the lines of a publish stream ------------------------------------------------------

MAX_LINE = 120


def _line_full(line: bytes) -> list[PublishRequest] | None:
    """The per-line path's answer: the requests, or None when it refuses the line (a
    blank line is skipped by the stream; here it is refused too)."""
    if len(line) > MAX_LINE:
        return None
    try:
        return parse_publish_body(line, SETTINGS, "line")
    except PublishError:
        return None


def _lines_agree(lines: list[bytes]) -> list[list[PublishRequest] | None]:
    """Every implementation gives the same answer per line, and where it gives requests
    they are the per-line path's."""
    answers = [impl.requests_of_lines(lines, MAX_LINE, *LIMITS) for impl in IMPLS]
    assert all(a == answers[0] for a in answers), (lines, answers)
    for answer in answers:
        assert type(answer) is list and len(answer) == len(lines)
        for line, requests in zip(lines, answer, strict=True):
            if requests is not None:
                assert requests == _line_full(line), line
    return answers[0]


def test_stream_lines_of_the_common_shapes_are_parsed_in_one_call() -> None:
    lines = [orjson.dumps(document) for document in COMMON]
    assert all(requests is not None for requests in _lines_agree(lines))


def test_stream_lines_left_to_the_per_line_path() -> None:
    refused = [orjson.dumps(document) for document in REFUSED]
    duplicate = b'{"events":[{"topic":"a","data":1,"id":"x"},{"topic":"b","data":2,"id":"x"}]}'
    long = b'{"topic":"a","data":"' + b"x" * MAX_LINE + b'"}'
    rarer = b'{"topics":["a","b"],"data":1}'
    lines = [b"", b"  \t", b"not json", b"{", duplicate, long, rarer, *refused]
    assert _lines_agree(lines) == [None] * len(lines)
    # the per-line path takes the rarer shape; the others it refuses with its words
    assert _line_full(rarer) == [PublishRequest(("a", "b"), 1)]
    with pytest.raises(PublishError, match="also the id of events"):
        parse_publish_body(duplicate, SETTINGS, "line")
    # exactly at the limit is taken; a byte more is not
    edge = b'{"topic":"a","data":"' + b"x" * (MAX_LINE - 23) + b'"}'
    assert len(edge) == MAX_LINE
    assert _lines_agree([edge, edge + b" "]) == [[PublishRequest(("a",), "x" * 97)], None]


def test_stream_lines_of_a_wrong_type_are_refused_alike() -> None:
    for impl in IMPLS:
        with pytest.raises(TypeError):
            impl.requests_of_lines((b"{}",), MAX_LINE, *LIMITS)
        with pytest.raises(TypeError):
            impl.requests_of_lines([1], MAX_LINE, *LIMITS)


# ---------------------------------------------------------------- the lines' acks


def _acks(lines: list[list[Any]], ids: list[str]) -> list[bytes]:
    """Every implementation's acks of ``lines`` (copies), the same; checked against the
    ack the stream wrote before ``ack_lines`` (orjson per line)."""
    answers = []
    for impl in IMPLS:
        copies = [list(line) for line in lines]
        impl.ack_lines(copies, ids)
        answers.append([line[2] for line in copies])
    assert all(a == answers[0] for a in answers), (lines, ids, answers)
    start = 0
    for line, ack in zip(lines, answers[0], strict=True):
        count = len(line[1])
        expected = b'{"line":%d,"ids":%b}\n' % (line[0], orjson.dumps(ids[start : start + count]))
        assert ack == expected
        assert orjson.loads(ack) == {"line": line[0], "ids": ids[start : start + count]}
        start += count
    return answers[0]


def test_acks_of_published_lines_in_one_call() -> None:
    request = PublishRequest(("a",), 1)
    lines = [[7, [request], None], [8, [request] * 3, None], [10, [request], None]]
    ids = ["1754000000000001", "n-1", "n-2", "n-3", "x"]
    assert _acks(lines, ids) == [
        b'{"line":7,"ids":["1754000000000001"]}\n',
        b'{"line":8,"ids":["n-1","n-2","n-3"]}\n',
        b'{"line":10,"ids":["x"]}\n',
    ]
    # ids JSON must escape, or not ASCII, or too long for the buffer: as orjson writes them
    odd = ['say "hi"', "back\\slash", "tab\there", "caf\u00e9", "\u2028", "~!@#$%^&*()", "z" * 3000]
    _acks([[n, [request], None] for n in range(len(odd))], odd)
    _acks([[1, [request] * len(odd), None]], odd)
    _acks([[2**70, [request], None], [-3, [request], None]], ["a", "b"])
    assert _acks([], []) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**12), st.lists(st.text(max_size=12), min_size=1, max_size=4)),
        max_size=6,
    )
)
def test_acks_of_any_ids_are_orjsons(cases: list[tuple[int, list[str]]]) -> None:
    request = PublishRequest(("a",), 1)
    lines = [[number, [request] * len(ids), None] for number, ids in cases]
    _acks(lines, [event_id for _, ids in cases for event_id in ids])


def test_acks_with_too_few_or_too_many_ids_are_refused_alike() -> None:
    request = PublishRequest(("a",), 1)
    for impl in IMPLS:
        for ids in (["1"], ["1", "2", "3"]):
            lines = [[1, [request, request], None]]
            with pytest.raises(ValueError, match="as many ids"):
                impl.ack_lines(lines, ids)
            assert lines[0][2] is None  # nothing written
        with pytest.raises(TypeError):
            impl.ack_lines(([1, [request], None],), ["1"])


def _dumps(document: Any) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:  # an integer past 64 bits: not JSON orjson writes
        return b"[]"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_document.map(_dumps), st.binary(max_size=8)), max_size=6))
def test_any_stream_lines_get_the_per_line_answer_or_none(lines: list[bytes]) -> None:
    _lines_agree(lines)
