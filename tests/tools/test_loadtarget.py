"""``sse_fast.loadtarget``: how the load tools are told the API of a server that is
not ours (templates, where the stamps are in an event, how to publish)."""

from __future__ import annotations

import sys

import orjson
import pytest

from sse_fast.loadtarget import (
    PUBLISH_NAMES,
    SUBSCRIBE_NAMES,
    CommandPublish,
    HttpPublish,
    Stamp,
    Stamps,
    Subscription,
    Template,
    TemplateError,
    parse_header,
    split_url,
    sse_fast_publish,
    sse_fast_subscribe,
)


def test_a_template_fills_its_names_and_leaves_other_braces_alone() -> None:
    body = Template('{"room": {topic_json}, "msg": {data_json}, "x": {"y": 1}}', PUBLISH_NAMES)
    text = body.fill(topic='a "b"', data='{"t": 1}')
    assert orjson.loads(text) == {"room": 'a "b"', "msg": '{"t": 1}', "x": {"y": 1}}
    url = Template("/e/{topic}?raw={topic_raw}&u={user}", SUBSCRIBE_NAMES)
    assert url.fill(topic="a/b c", user=7) == "/e/a%2Fb%20c?raw=a/b c&u=7"
    assert Template("{data_url}", PUBLISH_NAMES).fill(data="a&b=c") == "a%26b%3Dc"


def test_a_misspelt_or_misplaced_placeholder_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(TemplateError, match=r"unknown placeholder \{tpoic\}.*\{topic\}"):
        Template("/events?topic={tpoic}", SUBSCRIBE_NAMES)
    with pytest.raises(TemplateError, match=r"\{data\} has no value"):
        Subscription("http://127.0.0.1:8000/events?x={data}")
    with pytest.raises(TemplateError, match="not the host"):
        Subscription("http://{topic}.example:8000/events")
    with pytest.raises(TemplateError, match="is not an http:// URL"):
        HttpPublish("127.0.0.1:8000/publish")
    with pytest.raises(TemplateError, match="capitals"):
        HttpPublish("http://127.0.0.1:8000/publish", method="post")


def test_urls_split_into_host_port_and_path() -> None:
    address = split_url("http://127.0.0.1:8123/a/{topic}?q=1", SUBSCRIBE_NAMES)
    assert (address.scheme, address.host, address.port) == ("http", "127.0.0.1", 8123)
    assert address.path.fill(topic="x") == "/a/x?q=1"
    assert split_url("http://localhost").port == 80
    assert split_url("http://localhost").path.fill() == "/"


def test_a_subscription_fills_path_and_headers_per_user() -> None:
    sub = Subscription(
        "http://127.0.0.1:8000/rooms/{topic}/stream",
        headers={"Authorization": "Bearer user-{user}"},
    )
    assert sub.path("lobby", 3) == "/rooms/lobby/stream"
    assert sub.header_values("lobby", 3) == {"Authorization": "Bearer user-3"}
    assert sse_fast_subscribe("http://127.0.0.1:9000/").path("t 1") == "/events?topic=t%201"


def test_the_sse_fast_publish_is_our_api() -> None:
    method, path, headers, body = sse_fast_publish("http://127.0.0.1:8000", "tok").request(
        "news", '{"t": 1}'
    )
    assert (method, path) == ("POST", "/publish")
    assert headers == {"Content-Type": "application/json", "Authorization": "Bearer tok"}
    assert orjson.loads(body) == {"topic": "news", "data": '{"t": 1}'}


def test_an_http_publish_from_templates() -> None:
    publish = HttpPublish(
        "http://127.0.0.1:8080/pub?id={topic}",
        method="PUT",
        body="{data}",
        headers={"X-Channel": "{topic_raw}"},
    )
    assert publish.address.port == 8080
    assert publish.request("a/b", "hello") == (
        "PUT",
        "/pub?id=a%2Fb",
        {"X-Channel": "a/b"},
        b"hello",
    )


def test_stamps_are_found_by_path_and_unit() -> None:
    assert Stamps().read("", '{"t": 1.5, "s": 3, "w": "a"}') == Stamp(1.5, 3, "a")
    nested = Stamps(time="meta.sent", unit="ms", sequence="meta.n", source="")
    assert nested.read("message", '{"meta": {"sent": 1500, "n": 2}}') == Stamp(1.5, 2, None)
    listed = Stamps(time="items.0.t", sequence=None)
    assert listed.read("", '{"items": [{"t": 2}]}') == Stamp(2.0, None, None)
    assert Stamps(time="t", sequence="s").read("", '{"t": 1}') == Stamp(1.0, None, None)


def test_events_without_stamps_or_of_other_names_do_not_count() -> None:
    stamps = Stamps(events=frozenset({"tick"}))
    assert stamps.read("tick", '{"t": 1, "s": 1}') is not None
    assert stamps.read("", '{"t": 1, "s": 1}') is None  # "message"
    assert Stamps().read("", "not json") is None
    assert Stamps().read("", '{"t": "soon", "s": true}') is None  # wrong types
    assert Stamps().counts("") and Stamps(events=frozenset({"message"})).counts("")


def test_a_readers_function_replaces_the_paths() -> None:
    stamps = Stamps(reader=lambda name, data: Stamp(None, int(data), name))
    assert stamps.read("", "41") == Stamp(None, 41, "message")


def test_bad_paths_and_units_are_refused() -> None:
    with pytest.raises(ValueError, match="dotted path"):
        Stamps(time="meta..t")
    with pytest.raises(ValueError, match="unit 'min'"):
        Stamps(unit="min")


def test_headers_are_parsed_or_refused() -> None:
    assert parse_header("Authorization: Bearer x") == ("Authorization", "Bearer x")
    with pytest.raises(ValueError, match="'Name: value'"):
        parse_header("Authorization Bearer x")


@pytest.mark.processes("a publish command run per event")
def test_a_publish_command_runs_per_event_without_a_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    program = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '|' + sys.argv[3] + '\\n')"
    command = CommandPublish([sys.executable, "-c", program, str(out), "{topic_raw}", "{data}"])
    assert command.run("a b", "x; rm -rf /") == (True, "")
    assert out.read_text() == "a b|x; rm -rf /\n"
    failing = CommandPublish([sys.executable, "-c", "import sys; sys.exit('no broker')"])
    assert failing.run("t", "d") == (False, "exit 1: no broker")
    missing = CommandPublish("/nonexistent/publisher {data}")
    ok, why = missing.run("t", "d")
    assert not ok and "could not start" in why
    with pytest.raises(TemplateError, match="empty"):
        CommandPublish("")
