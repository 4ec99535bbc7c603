from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sse_fast
from sse_fast import EncodeError

from ..conftest import as_tuples
from ..support.golden import GOLDEN, REFUSED


@pytest.mark.parametrize(("kwargs", "frame", "parsed"), GOLDEN)
def test_golden_encode(
    impl: SimpleNamespace, kwargs: dict[str, Any], frame: bytes, parsed: tuple | None
) -> None:
    assert impl.encode(**kwargs) == frame
    assert impl.Event(**kwargs).encode() == frame


@pytest.mark.parametrize(("kwargs", "frame", "parsed"), GOLDEN)
def test_golden_parse(
    impl: SimpleNamespace, kwargs: dict[str, Any], frame: bytes, parsed: tuple | None
) -> None:
    parser = impl.Parser()
    events = parser.feed(frame)
    assert as_tuples(events) == ([parsed] if parsed else [])
    if "id" in kwargs:
        assert parser.last_event_id == str(kwargs["id"])
    if "retry" in kwargs:
        assert parser.retry == kwargs["retry"]


@pytest.mark.parametrize(("kwargs", "field"), REFUSED)
def test_refused_values_name_the_field(
    impl: SimpleNamespace, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(EncodeError) as info:
        impl.encode(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    with pytest.raises(EncodeError):
        impl.Event(**kwargs)


def test_encode_error_is_value_error() -> None:
    assert issubclass(EncodeError, ValueError)
    error = pickle.loads(pickle.dumps(EncodeError("id", "bad")))
    assert (error.field, error.reason) == ("id", "bad")


def test_event_is_immutable_value(impl: SimpleNamespace) -> None:
    event = impl.Event({"a": 1}, event="e", id="1", retry=10, comment="c")
    assert (event.data, event.event, event.id, event.retry, event.comment) == (
        {"a": 1},
        "e",
        "1",
        10,
        "c",
    )
    with pytest.raises(AttributeError):
        event.data = "other"
    with pytest.raises(AttributeError):
        event.event = "other"
    same = impl.Event({"a": 1}, event="e", id="1", retry=10, comment="c")
    assert event == same
    assert hash(event) == hash(same)
    assert event != impl.Event({"a": 2}, event="e", id="1", retry=10, comment="c")
    assert "Event(" in repr(event) and "'e'" in repr(event)
    assert pickle.loads(pickle.dumps(event)) == event


def test_event_snapshot_of_mutable_data(impl: SimpleNamespace) -> None:
    data = {"n": 1}
    event = impl.Event(data)
    data["n"] = 2
    assert event.encode() == b'data: {"n":1}\n\n'


def test_encode_many_is_one_buffer(impl: SimpleNamespace) -> None:
    events = [impl.Event(f"m{i}", id=i) for i in range(100)]
    joined = impl.encode_many(events)
    assert joined == b"".join(e.encode() for e in events)
    assert impl.encode_many(iter(events[:2])) == events[0].encode() + events[1].encode()
    assert impl.encode_many([]) == b""
    parsed = impl.Parser().feed(joined)
    assert [e.data for e in parsed] == [f"m{i}" for i in range(100)]


def test_encode_many_refuses_non_events(impl: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match="at index 1"):
        impl.encode_many([impl.Event("a"), {"data": "b"}])


def test_str_subclass_and_large_retry(impl: SimpleNamespace) -> None:
    class Text(str):
        pass

    assert impl.encode(Text("a\nb"), event=Text("t")) == b"event: t\ndata: a\ndata: b\n\n"
    assert impl.encode(retry=10**30) == b"retry: " + str(10**30).encode() + b"\n\n"


def test_large_payload_lines(impl: SimpleNamespace) -> None:
    text = "\n".join("x" * (i % 50) for i in range(5000))
    frame = impl.encode(text)
    assert frame.count(b"data: ") == 5000
    assert as_tuples(impl.Parser().feed(frame)) == [("message", text, "", None)]


def test_public_api_names() -> None:
    for name in (
        "HAS_EXTENSIONS",
        "Event",
        "encode",
        "encode_many",
        "EncodeError",
        "Parser",
        "Ring",
        "ParsedEvent",
        "Lagged",
        "EventTooLarge",
    ):
        assert hasattr(sse_fast, name), name


def test_json_fragments_cannot_inject_fields(impl: SimpleNamespace) -> None:
    import orjson

    frame = impl.encode(orjson.Fragment(b'{"a":1}\nevent: injected\rdata: evil'))
    assert frame == b'data: {"a":1}\ndata: event: injected\ndata: data: evil\n\n'
    with pytest.raises(EncodeError, match="not valid UTF-8"):
        impl.encode({"x": orjson.Fragment(b"\xff")})


def test_non_ascii_text_is_not_cached_on_the_string(impl: SimpleNamespace) -> None:
    import sys

    text = "caf\u00e9 " * 10_000
    before = sys.getsizeof(text)
    assert impl.encode(text) == b"data: " + text.encode() + b"\n\n"
    assert sys.getsizeof(text) == before


# ------------------------------------------------------------ line ends and field order

_one_line = st.text(st.characters(blacklist_characters="\r\n\x00", codec="utf-8"), max_size=12)
_any_text = st.text(st.characters(codec="utf-8"), max_size=24)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.none() | _any_text,
    event=st.none() | _one_line,
    id=st.none() | _one_line,
    retry=st.none() | st.integers(0, 10**12),
    comment=st.none() | _any_text,
    sep=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_the_id_first_order_writes_sse_starlettes_bytes(
    impl: SimpleNamespace,
    data: str | None,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
    sep: str,
) -> None:
    """sse-starlette's own encoder (the original, installed) is the oracle: with its
    separator and ``ID_FIRST_ORDER`` the native encoder writes its bytes exactly;
    with our order, the same lines in ours."""
    from sse_starlette.event import ServerSentEvent as Original

    fields = {"event": event, "id": id, "retry": retry, "comment": comment}
    if data is None and all(v is None for v in fields.values()):
        return  # the original writes a lone separator; we refuse an empty frame
    theirs = Original(data, **fields, sep=sep).encode()
    assert impl.encode(data, **fields, sep=sep, order=impl.ID_FIRST_ORDER) == theirs
    ours = impl.encode(data, **fields)
    assert ours.replace(b"\n", sep.encode()) == impl.encode(data, **fields, sep=sep)
    assert sorted(ours.split(b"\n")) == sorted(theirs.replace(sep.encode(), b"\n").split(b"\n"))


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("sep", "\n\n", r"sep: must be one of \n, \r\n, \r; got '\n\n'"),
        ("sep", None, r"sep: must be one of \n, \r\n, \r; got None"),
        ("sep", b"\n", r"sep: must be one of \n, \r\n, \r; got b'\n'"),
        (
            "order",
            "comment,data",
            "order: must be 'comment,event,id,retry,data' or "
            "'comment,id,event,data,retry'; got 'comment,data'",
        ),
        (
            "order",
            None,
            "order: must be 'comment,event,id,retry,data' or "
            "'comment,id,event,data,retry'; got None",
        ),
    ],
)
def test_a_line_end_or_order_that_is_not_one_is_refused(
    impl: SimpleNamespace, keyword: str, value: object, message: str
) -> None:
    with pytest.raises(EncodeError) as refused:
        impl.encode("x", **{keyword: value})
    assert str(refused.value) == message and refused.value.field == keyword


# -- a sequenced batch (the brokers' sequencing) ----------------------------------------


def test_a_sequenced_batch_is_encoded_under_its_ids(impl: SimpleNamespace) -> None:
    from sse_fast.brokers._sequencing import Sequenced
    from sse_fast.publishing import PublishRequest

    requests = [
        PublishRequest(("a",), {"n": 1}),
        PublishRequest(("b", "c"), "hi", "note", "mine", 5),
        PublishRequest(("a",), None, "ping"),
    ]
    items = impl.encode_sequenced(requests, 1795, 2.5, Sequenced)
    assert [type(item) for item in items] == [Sequenced] * 3
    assert [(i.position, i.id, i.topics, i.accepted_at) for i in items] == [
        (1795, "1795", ("a",), 2.5),
        (1796, "mine", ("b", "c"), 2.5),
        (1797, "1797", ("a",), 2.5),
    ]
    assert [i.frame for i in items] == [
        impl.encode({"n": 1}, id="1795"),
        impl.encode("hi", event="note", id="mine", retry=5),
        impl.encode(None, event="ping", id="1797"),
    ]
    assert impl.encode_sequenced([], 7, 0.0, Sequenced) == []


def test_a_sequenced_batch_is_encoded_whole_or_not_at_all(impl: SimpleNamespace) -> None:
    from sse_fast.brokers._sequencing import Sequenced
    from sse_fast.publishing import PublishRequest

    good = PublishRequest(("a",), "fine")
    with pytest.raises(EncodeError) as info:
        impl.encode_sequenced([good, PublishRequest(("a",), "x", "two\nlines")], 1, 0.0, Sequenced)
    assert info.value.field == "event"
    with pytest.raises(EncodeError):
        impl.encode_sequenced(
            [good, PublishRequest(("a",), "x", None, "bad\nid")], 1, 0.0, Sequenced
        )
