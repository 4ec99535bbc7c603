"""Typed channels (``sse_fast.schemas``): declarations, the check a publish goes
through, the JSON Schema, and all of it through a real ``sse-fast serve
--schemas``. Real processes: that server, serving typed channels or refusing a bad spec
at its start."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import msgspec
import pytest

from sse_fast._channel_patterns import SEGMENT
from sse_fast._core.request import TOPIC_CHARACTERS
from sse_fast.hub import Hub
from sse_fast.publishing import PublishError, PublishRequest
from sse_fast.schemas import SchemaError, Schemas, Stream, load
from sse_fast.settings import Settings, SettingsError
from sse_fast.testing import ServerProcess, collect

from ..support import typed_streams as typed
from ..support.typed_streams import Author, CommentAdded, SystemAlert, TaskComplete

SCHEMAS = Schemas(typed.streams)
GOOD = {"comment_id": 1, "text": "hi", "author": {"id": 3, "name": "Ada"}}


def check(topic: str, data: Any, event: str | None = None) -> PublishRequest:
    (out,) = SCHEMAS.check([PublishRequest((topic,), data, event)])
    return out


def refusal(topic: str, data: Any, event: str | None = None) -> str:
    with pytest.raises(PublishError) as info:
        check(topic, data, event)
    assert info.value.status == 400
    return str(info.value)


def test_patterns_match_their_topics_only() -> None:
    comments, notifications, alerts = typed.streams
    assert comments.match("item:42") == {"item_id": "42"}
    assert comments.match("item:a-b.c") == {"item_id": "a-b.c"}
    for topic in ("item:", "item:a/b", "item:a:b", "items:1", "xitem:1"):
        assert comments.match(topic) is None, topic
    assert notifications.match("user:7") == {"user_id": "7"}
    assert notifications.match("user:x") is None
    assert alerts.match("system/alerts") == {} and alerts.match("system/alertsx") is None
    # a parameter is a topic segment: the topic characters but / and :
    segment = re.compile(SEGMENT)
    for character in TOPIC_CHARACTERS:
        assert bool(segment.fullmatch(character)) is (character not in "/:"), character


def test_topic_builds_and_checks_parameters() -> None:
    comments, notifications, _ = typed.streams
    assert comments.topic(item_id=42) == "item:42"
    assert notifications.topic(user_id=7) == "user:7"
    with pytest.raises(SchemaError, match=r"takes parameters \['item_id'\]"):
        comments.topic(id=1)
    with pytest.raises(SchemaError, match="no decimal number"):
        notifications.topic(user_id="x")
    with pytest.raises(SchemaError, match="no / or :"):
        comments.topic(item_id="a/b")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("1bad", "a", [CommentAdded]), "stream name"),
        (("s", "item:{id", [CommentAdded]), "brace"),
        (("s", "item:{a}{b}", [CommentAdded]), "separator"),
        (("s", "item:{a:float}", [CommentAdded]), "kinds are str"),
        (("s", "{a}:{a}", [CommentAdded]), "appears twice"),
        (("s", "item with space", [CommentAdded]), "characters topics cannot have"),
        (("s", "", [CommentAdded]), "non-empty"),
        (("s", "a", []), "at least one event"),
        (("s", "a", [dict]), "not a msgspec.Struct"),
        (("s", "a", [CommentAdded, CommentAdded]), "two event types"),
    ],
)
def test_bad_declarations_say_what_is_wrong(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Stream(*args)


def test_two_streams_of_one_name_are_refused() -> None:
    with pytest.raises(SchemaError, match="two streams"):
        Schemas([typed.comments, Stream("comments", "other:{x}", [SystemAlert])])


def test_a_declared_event_is_written_back_whole() -> None:
    out = check("item:42", {**GOOD, "unknown": "dropped"}, "CommentAdded")
    assert out.event == "CommentAdded"
    assert out.data == {**GOOD, "tags": [], "edited": False}  # defaults in, unknown out
    assert list(out.data) == ["comment_id", "text", "author", "tags", "edited"]
    # the event can be left out when the stream has one type
    assert check("user:7", {"task_id": "t", "result": "ok"}).event == "TaskComplete"


@pytest.mark.parametrize(
    ("topic", "data", "event", "message"),
    [
        ("item:1", {**GOOD, "comment_id": "1"}, "CommentAdded", "got `str` - at `$.comment_id`"),
        ("item:1", {**GOOD, "author": {"id": 3}}, "CommentAdded", "missing required field `name`"),
        ("item:1", {**GOOD, "tags": ["a", 2]}, "CommentAdded", "at `$.tags[1]`"),
        ("item:1", "text", "CommentAdded", "Expected `object`, got `str`"),
        ("item:1", GOOD, None, "name its event, one of CommentAdded, CommentDeleted"),
        ("item:1", GOOD, "Nope", "has no event 'Nope'; its events: CommentAdded"),
        ("user:7", {"task_id": "t", "result": "ok", "x": 1}, None, "unknown field `x`"),
        ("system/alerts", {"level": "loud", "message": "m"}, None, "'loud' - at `$.level`"),
    ],
)
def test_a_wrong_event_gets_a_400_naming_the_field(
    topic: str, data: Any, event: str | None, message: str
) -> None:
    assert message in refusal(topic, data, event)


def test_undeclared_topics_pass_untouched() -> None:
    request = PublishRequest(("items:1", "news"), {"anything": True}, "whatever")
    assert SCHEMAS.check([request])[0] is request


def test_one_event_to_two_streams_is_refused() -> None:
    request = PublishRequest(("item:1", "user:7"), GOOD, "CommentAdded")
    with pytest.raises(PublishError, match="topics of two streams"):
        SCHEMAS.check([request])


def test_the_json_schema_describes_streams_and_events() -> None:
    schema = SCHEMAS.json_schema()
    comments = schema["streams"]["comments"]
    assert comments["channel"] == "item:{item_id}"
    assert comments["parameters"]["item_id"]["type"] == "string"
    assert schema["streams"]["notifications"]["parameters"]["user_id"]["type"] == "integer"
    assert comments["events"]["CommentAdded"] == {"$ref": "#/$defs/CommentAdded"}
    added = schema["$defs"]["CommentAdded"]
    assert added["required"] == ["comment_id", "text", "author"]
    assert added["properties"]["author"] == {"$ref": "#/$defs/Author"}
    level = schema["$defs"]["SystemAlert"]["properties"]["level"]
    assert sorted(level["enum"]) == ["critical", "info", "warning"]
    json.dumps(schema)  # plain JSON


def test_load_says_what_is_wrong() -> None:
    assert set(load("tests.support.typed_streams:streams").streams) == {
        "comments",
        "notifications",
        "alerts",
    }
    assert set(load("tests.support.typed_streams:comments").streams) == {"comments"}
    for spec, message in [
        ("nocolon", "module:attribute"),
        ("no_such_module_x:streams", "cannot import"),
        ("tests.support.typed_streams:missing", "has no 'missing'"),
        ("tests.support.typed_streams:Author", "give a Stream"),
    ]:
        with pytest.raises(SchemaError, match=message):
            load(spec)
    with pytest.raises(SettingsError, match="module:attribute"):
        Settings(schemas="nocolon")


def test_the_hub_checks_declared_events_in_process() -> None:
    async def main() -> None:
        hub = Hub(Settings())
        assert hub.schemas is None  # nothing declared: the publish path skips schemas
        hub.declare(*typed.streams)
        request = typed.comments.request(
            CommentAdded(comment_id=5, text="t", author=Author(id=1, name="A")), item_id=9
        )
        assert request.topics == ("item:9",) and request.event == "CommentAdded"
        assert await hub.publish([request])
        with pytest.raises(PublishError, match=r"\$\.comment_id"):
            await hub.publish(
                [PublishRequest(("item:9",), {**GOOD, "comment_id": None}, "CommentAdded")]
            )
        with pytest.raises(SchemaError, match="no event type TaskComplete"):
            typed.comments.request(TaskComplete(task_id="t", result="r"), item_id=1)
        # nothing of a refused batch is published, the good event in it neither
        before = hub.topics.by_name["item:9"].published
        with pytest.raises(PublishError):
            await hub.publish(
                [
                    PublishRequest(("item:9",), GOOD, "CommentAdded"),
                    PublishRequest(("item:9",), {"comment_id": "x"}, "CommentDeleted"),
                ]
            )
        assert hub.topics.by_name["item:9"].published == before

    asyncio.run(main())


@pytest.mark.processes("typed channels through a real server and its refused start")
def test_typed_channels_through_a_real_server() -> None:
    def body(event: str | None, data: Any, topic: str = "item:42") -> bytes:
        return json.dumps({"topic": topic, "event": event, "data": data}).encode()

    async def main(server: ServerProcess) -> list[Any]:
        client = server.client("item:42")
        await client.connect()
        try:
            status, _, reply = await server.publish(body("CommentAdded", GOOD))
            assert status == 200, reply
            status, _, reply = await server.publish(body("CommentAdded", {**GOOD, "text": 5}))
            assert status == 400
            assert "Expected `str`, got `int` - at `$.text`" in json.loads(reply)["error"]
            status, _, reply = await server.publish(body("CommentDeleted", {"comment_id": 2}))
            assert status == 200, reply
            events = await collect(client, 2, until=lambda c: False)
        finally:
            client.close()
        status, headers, reply = await server.get("/schema")
        assert status == 200 and headers["content-type"] == "application/json"
        assert set(json.loads(reply)["streams"]) == {"comments", "notifications", "alerts"}
        # undeclared topics publish as before
        status, _, _ = await server.publish(body(None, {"free": "form"}, topic="news"))
        assert status == 200
        return events

    with ServerProcess("--schemas", "tests.support.typed_streams:streams") as server:
        events = asyncio.run(main(server))
    assert [(e.event, json.loads(e.data)) for e in events if e.data] == [
        ("CommentAdded", {**GOOD, "tags": [], "edited": False}),
        ("CommentDeleted", {"comment_id": 2}),
    ]  # the refused one is not among them


@pytest.mark.processes("typed channels through a real server and its refused start")
def test_schema_is_404_without_streams_and_a_bad_spec_stops_the_start() -> None:
    with ServerProcess() as server:
        status, _, body = asyncio.run(server.get("/schema"))
        assert status == 404 and "no typed stream is declared" in json.loads(body)["error"]
    refused = ServerProcess("--schemas", "tests.support.typed_streams:missing")
    with pytest.raises(RuntimeError, match="has no 'missing'"), refused:
        pass


def test_structs_that_leave_fields_out_are_refused() -> None:
    class Sparse(msgspec.Struct, omit_defaults=True):
        a: int = 0

    class Unset(msgspec.Struct):
        a: int | msgspec.UnsetType = msgspec.UNSET

    for kind in (Sparse, Unset):
        with pytest.raises(SchemaError, match="leaves fields out"):
            Stream("s", "t", [kind])


def test_two_event_types_of_one_class_name_get_their_own_definitions() -> None:
    first = msgspec.defstruct("Created", [("a", int)], module="orders")
    second = msgspec.defstruct("Created", [("b", str)], module="users")
    schemas = Schemas(
        [Stream("orders", "orders/{id}", [first]), Stream("users", "u/{id}", [second])]
    )
    schema = schemas.json_schema()
    refs = [s["events"]["Created"]["$ref"] for s in schema["streams"].values()]
    assert len(set(refs)) == 2
    for ref, field in zip(refs, ("a", "b"), strict=True):
        assert field in schema["$defs"][ref.removeprefix("#/$defs/")]["properties"]


def test_a_pattern_that_starts_with_a_parameter() -> None:
    """No literal prefix to rule topics out by: every topic goes to the regex."""
    schemas = Schemas([Stream("rooms", "{room}:chat", [SystemAlert]), typed.comments])
    (out,) = schemas.check([PublishRequest(("lobby:chat",), {"level": "info", "message": "m"})])
    assert out.event == "SystemAlert"
    request = PublishRequest(("lobby:news",), {"anything": 1})
    assert schemas.check([request])[0] is request
    with pytest.raises(PublishError, match="Object missing required field `message`"):
        schemas.check([PublishRequest(("a:chat",), {"level": "info"})])


def test_a_pattern_stream_types_every_topic_under_it() -> None:
    """A channel ending in ``/*``: its topics are every topic under it (checked as its
    events), ``topic()`` is the pattern a client subscribes to, and ``request()`` names
    the topic under it with ``subtopic``; a ``*`` anywhere else is refused."""
    activity = typed.activity
    assert activity.is_pattern and not typed.comments.is_pattern
    assert activity.topic(user_id=7) == "user/7/*"
    assert activity.match("user/7/orders/3") == {"user_id": "7"}
    assert activity.match("user/7/") is None and activity.match("user/x/inbox") is None
    schemas = Schemas(typed.with_pattern)
    assert schemas.stream_of("user/7/likes") is activity
    assert schemas.stream_of("user:7") is typed.notifications
    request = activity.request(typed.ActivityNote("like", "a like"), subtopic="likes", user_id=7)
    assert request.topics == ("user/7/likes",) and request.event == "ActivityNote"
    (checked,) = schemas.check([PublishRequest(("user/7/likes",), {"kind": "k", "text": "t"})])
    assert checked.event == "ActivityNote"
    with pytest.raises(PublishError, match="kind"):
        schemas.check([PublishRequest(("user/7/likes",), {"text": "no kind"})])
    with pytest.raises(SchemaError, match="name the topic under it with subtopic"):
        activity.request(typed.ActivityNote("k", "t"), user_id=7)
    with pytest.raises(SchemaError, match="subtopic= is for a pattern stream"):
        typed.notifications.request(typed.TaskComplete("t", "r"), subtopic="x", user_id=7)
    for channel in ("user/*/inbox", "*", "user/{id}?", "feed*"):
        with pytest.raises(SchemaError, match="may end in /\\*"):
            Stream("bad", channel, [typed.ActivityNote])
    # a stream whose channel has no parameter: its prefix is the text before the *
    feed = Stream("feed", "feed/*", [typed.ActivityNote])
    (checked,) = Schemas([feed]).check([PublishRequest(("feed/a",), {"kind": "k", "text": "t"})])
    assert checked.event == "ActivityNote"


def test_a_pattern_stream_never_types_a_presence_companion() -> None:
    """``user/{user_id:int}/*`` does not take ``user/7/presence`` nor
    ``user/7/inbox/presence``: the hub's presence news there is never checked (and
    never refused) against the stream's events."""
    schemas = Schemas(typed.with_pattern)
    for companion in ("user/7/presence", "user/7/inbox/presence"):
        assert schemas.stream_of(companion) is None
        news = PublishRequest((companion,), {"topic": "x", "subjects": {}}, "presence")
        assert schemas.check([news]) == [news]
    assert schemas.stream_of("user/7/presence/x") is typed.activity
