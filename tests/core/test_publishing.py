"""What may be published, checked in one place: topic names, event ids (the same
rules for a published id and a Last-Event-ID), event objects and bodies."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from sse_fast._publish_checks import (
    check_event_id,
    check_topic,
    parse_event,
    parse_publish_body,
)
from sse_fast.hub import Hub
from sse_fast.publishing import PublishError, PublishRequest
from sse_fast.settings import Settings

SETTINGS = Settings(max_topic_length=20, max_last_event_id_length=10, max_events_per_batch=3)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        (5, "must be a string, got int"),
        ("", "must not be empty"),
        ("x" * 21, "21 characters long; the limit is 20"),
        ("a b", "has characters outside"),
        ("a\nb", "has characters outside"),
    ],
)
def test_bad_topic_names_say_what_is_wrong(name: object, fragment: str) -> None:
    with pytest.raises(PublishError) as info:
        check_topic(name, SETTINGS)
    assert fragment in str(info.value) and info.value.status == 400


def test_legal_topic_names_pass_unchanged() -> None:
    for name in ("orders", "user/42", "a:b@c!$&'()+,;=%-~.", "x" * 20):
        assert check_topic(name, SETTINGS) == name


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("x" * 11, "longer than 10"), ("a\rb", "CR, LF or NUL"), ("a\nb", "CR"), ("a\0b", "NUL")],
)
def test_ids_and_last_event_ids_obey_one_rule(value: str, fragment: str) -> None:
    for what in ("id", "Last-Event-ID"):
        with pytest.raises(PublishError) as info:
            check_event_id(value, SETTINGS, what)
        assert str(info.value).startswith(what) and fragment in str(info.value)
    with pytest.raises(PublishError) as info:
        parse_event({"topic": "t", "data": 1, "id": value}, SETTINGS, "body")
    assert str(info.value).startswith("body: id") and fragment in str(info.value)


def test_an_event_object_becomes_a_request() -> None:
    raw = {"topics": ["a", "b", "a"], "data": {"k": 1}, "event": "e", "id": "7", "retry": 5}
    assert parse_event(raw, SETTINGS, "body") == PublishRequest(("a", "b"), {"k": 1}, "e", "7", 5)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"topic": "a"}, "data is required"),
        ({"topic": "a", "data": None}, "data is required"),
        ({"data": 1}, "topic (or topics) is required"),
        ({"topic": "a", "topics": ["b"], "data": 1}, "either topic or topics"),
        ({"topics": [], "data": 1}, "non-empty list"),
        ({"topic": "a", "data": 1, "extra": 2}, "unknown field(s) extra"),
        ({"topic": "a", "data": 1, "event": "a\nb"}, "one-line string"),
        ({"topic": "a", "data": 1, "event": "sse-fast-missed"}, "reserved"),
        ({"topic": "a", "data": 1, "id": ""}, "non-empty string"),
        ({"topic": "a", "data": 1, "retry": True}, "non-negative integer"),
        ({"topic": "a", "data": 1, "retry": -1}, "non-negative integer"),
    ],
)
def test_bad_event_objects_say_what_is_wrong(raw: dict, fragment: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_event(raw, SETTINGS, "events[2]")
    assert str(info.value).startswith("events[2]") and fragment in str(info.value)


def test_a_body_is_all_valid_or_refused() -> None:
    one = {"topic": "a", "data": 1}
    assert len(parse_publish_body(orjson.dumps({"events": [one, one]}), SETTINGS)) == 2
    with pytest.raises(PublishError) as info:
        parse_publish_body(orjson.dumps({"events": [one, {"topic": "a"}]}), SETTINGS)
    assert str(info.value).startswith("events[1]")
    with pytest.raises(PublishError) as info:
        parse_publish_body(orjson.dumps({"events": [one] * 4}), SETTINGS)
    assert info.value.status == 413 and "limit is 3" in str(info.value)
    for body, fragment in (
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"events": [], "x": 1}', "only the field events"),
        (b'{"events": []}', "non-empty list"),
    ):
        with pytest.raises(PublishError) as info:
            parse_publish_body(body, SETTINGS)
        assert fragment in str(info.value)


def test_a_batch_with_one_id_twice_is_refused_whole_in_process_too() -> None:
    async def main() -> None:
        hub = Hub(Settings())
        batch = [PublishRequest(("t",), i, id=f"q{i % 2}") for i in range(3)]
        with pytest.raises(
            PublishError, match=r"events\[2\]: id 'q0' is also the id of events\[0\]"
        ):
            await hub.publish(batch)
        with pytest.raises(PublishError, match="Nothing was published"):
            hub.publish_nowait(batch)
        assert not hub.topics.by_name  # nothing of it was stored
        assert await hub.publish([PublishRequest(("t",), "x", id="q0")]) == ["q0"]

    asyncio.run(main())
