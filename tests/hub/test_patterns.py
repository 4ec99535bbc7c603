"""Pattern streams in one hub: a stream of ``u/a/*`` gets exactly the events of the
topics its patterns match (those created after it opened too), in order, once;
resumes over the topics created while its client was away; says which topics lost
events; and leaves nothing behind. Checked against the reference matcher."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, MutableMapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_fast._patterns import matches
from sse_fast.app import App
from sse_fast.hub import Hub, PublishRequest
from sse_fast.testing import wait_for

from ..support.asgi_harness import Stream, make_app, publish, request, run, settle

SEGMENTS = ["a", "b", "ab"]
TOPICS = [
    "u/" + "/".join(parts)
    for depth in (1, 2, 3)
    for parts in itertools.product(SEGMENTS, repeat=depth)
]


def _pattern() -> st.SearchStrategy[str]:
    """A short glob over the topics' letters, mostly after ``u/`` (the index's segment
    buckets), sometimes not (its bucket of prefixes without a whole segment)."""
    return (
        st.tuples(st.sampled_from(["u/", "u/", ""]), st.text(alphabet="ab/*?", max_size=5))
        .map("".join)
        .filter(lambda p: "*" in p or "?" in p)
    )


def _events() -> st.SearchStrategy[list[tuple[str, ...]]]:
    """Publishes, each to one topic or two."""
    return st.lists(
        st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2, unique=True).map(tuple),
        min_size=1,
        max_size=25,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(_pattern(), min_size=1, max_size=3, unique=True),
    named=st.lists(st.sampled_from(TOPICS), max_size=2, unique=True),
    before=_events(),
    after=_events(),
    eager=st.booleans(),
    slow=st.booleans(),
)
def test_a_pattern_stream_gets_exactly_the_matching_events_in_order_once(
    patterns: list[str],
    named: list[str],
    before: list[tuple[str, ...]],
    after: list[tuple[str, ...]],
    eager: bool,
    slow: bool,
) -> None:
    """Topics published to before the stream opens exist; those of ``after`` are
    partly new. The stream (patterns and exact names mixed) gets every event of
    ``after`` one of whose topics a pattern or name matches, each once, in order of
    publishing; a client that stops reading for a while (``slow``) catches up to the
    same."""

    async def main() -> None:
        app = make_app(max_pattern_wildcards=5, pattern_literal_segments=0)
        for i, topics in enumerate(before):
            publish(app, list(topics), f"before-{i}")
        await settle()
        query = [("topic", t) for t in [*named, *patterns]]
        stream = Stream(app, query=query, eager=eager, capacity=2).start()
        await settle()
        assert stream.status == 200, stream.raw
        if slow:
            stream.pause()
        expected = []
        for i, topics in enumerate(after):
            publish(app, list(topics), f"after-{i}")
            if any(matches(t, named) or matches(t, patterns) for t in topics):
                expected.append(f"after-{i}")
            if i % 4 == 3:
                await settle(3)
        await settle()
        stream.resume()
        # a lazy client's writes wait in real time (``Stream``)
        await wait_for(lambda: len(stream.events) >= len(expected), what="the events caught up")
        await settle()
        assert [e.data for e in stream.events if e.event != "sse-fast-missed"] == expected
        stream.disconnect()
        await stream.finished()
        _assert_nothing_left(app)

    run(main())


def _app_on(clock: Callable[[], float], **settings: Any) -> App:
    """``make_app``'s app, its hub on ``clock`` (a test moves it: no waiting for
    ``topic_ttl``)."""
    made = make_app(**settings).settings
    return App(made, hub=Hub(made, clock=clock))


def _assert_nothing_left(app: Any) -> None:
    """No stream, no pattern in the index, no topic holding a gone stream."""
    hub = app.hub
    assert not hub.subscriptions
    assert hub.streams.patterns.streams == 0 and hub.streams.patterns.patterns == 0
    for topic in hub.topics.by_name.values():
        assert topic.subscribers == 0, topic.name
        assert not list(topic.members()), topic.name


def test_topics_created_while_away_are_resumed_in_order() -> None:
    """A client of ``user/42/*`` leaves; events go to its old topics and to topics
    created meanwhile (and to another user's); it comes back with its last id and
    gets exactly its user's events after it, in order, once: ``resumed``."""

    async def main() -> None:
        app = make_app()
        publish(app, "user/42/inbox", "hello")
        stream = Stream(app, query=[("topic", "user/42/*")]).start()
        await settle()
        publish(app, "user/42/inbox", "one")
        publish(app, "user/42/orders", "two")  # created while it is open
        await settle()
        assert stream.data() == ["one", "two"]
        last = stream.events[-1].id
        stream.disconnect()
        await stream.finished()
        publish(app, "user/42/likes", "three")  # created while it is away
        publish(app, "user/43/inbox", "not mine")
        publish(app, ["user/42/inbox", "user/42/likes"], "four")  # once
        publish(app, "user/42/orders", "five")
        back = Stream(app, query=[("topic", "user/42/*")], headers={"last-event-id": last})
        back.start()
        await settle()
        assert back.headers["sse-fast-resume"] == "resumed"
        assert back.data() == ["three", "four", "five"]
        publish(app, "user/42/new", "six")
        await settle()
        assert back.data()[-1] == "six"
        back.disconnect()
        await back.finished()
        _assert_nothing_left(app)

    run(main())


def test_a_matching_topic_gone_while_away_is_named_never_skipped() -> None:
    """A topic the pattern matches that was dropped while the client was away (its
    history swept) took events after the client's id with it: ``evicted``, and the
    ``sse-fast-missed`` names it and the newest position gone; the stream goes on."""

    async def main() -> None:
        now = [1000.0]
        app = _app_on(lambda: now[0], topic_ttl=10)
        stream = Stream(app, query=[("topic", "shop/7/*")]).start()
        await settle()
        publish(app, "shop/7/order-1", "a")
        await settle()
        last = stream.events[-1].id
        stream.disconnect()
        await stream.finished()
        publish(app, "shop/7/order-2", "b")  # after the id: then swept away
        now[0] += 11  # past topic_ttl
        assert app.hub.sweep() >= 1
        gone = app.hub.topics._swept["shop/7/order-2"]
        back = Stream(app, query=[("topic", "shop/7/*")], headers={"last-event-id": last})
        back.start()
        await settle()
        assert back.headers["sse-fast-resume"] == "evicted"
        missed = back.events[0]
        assert missed.event == "sse-fast-missed"
        data = json.loads(missed.data)
        assert data["reason"] == "evicted" and data["topics"] == {"shop/7/order-2": gone}
        publish(app, "shop/7/order-3", "c")
        await settle()
        assert back.data()[-1] == "c"
        back.disconnect()
        await back.finished()

    run(main())


def test_a_presence_companion_is_named_never_matched() -> None:
    """``room/1/*`` does not reach ``room/1/x/presence``; naming it does."""

    async def main() -> None:
        app = make_app()
        stream = Stream(app, query=[("topic", "room/1/*")]).start()
        named = Stream(app, query=[("topic", "room/1/x/presence")]).start()
        await settle()
        publish(app, "room/1/x/presence", "news")
        publish(app, "room/1/x", "event")
        await settle()
        assert stream.data() == ["event"]
        assert named.data() == ["news"]
        for s in (stream, named):
            s.disconnect()
            await s.finished()

    run(main())


def test_the_index_grows_with_distinct_patterns_not_streams() -> None:
    """Streams of one pattern share its entry; a pattern goes with its last stream."""

    async def main() -> None:
        app = make_app()
        streams = [Stream(app, query=[("topic", "feed/*")]).start() for _ in range(5)]
        other = Stream(app, query=[("topic", "feed/x?")]).start()
        await settle()
        index = app.hub.streams.patterns
        assert index.streams == 6 and index.patterns == 2
        publish(app, "feed/x1", "one")
        await settle()
        assert all(s.data() == ["one"] for s in [*streams, other])
        assert index.joined_total == 6  # a new topic joined each stream once
        status, _, body = await request(app, "GET", "/metrics")
        assert status == 200
        text = body.decode()
        for line in ("sse_fast_pattern_streams 6", "sse_fast_patterns 2"):
            assert line in text.splitlines(), line
        assert "sse_fast_pattern_joins_total 6" in text.splitlines()
        assert "sse_fast_pattern_match_seconds_total " in text
        for s in [*streams, other]:
            s.disconnect()
            await s.finished()
        assert index.streams == 0 and index.patterns == 0

    run(main())


def test_a_topic_created_while_the_response_starts_is_not_lost() -> None:
    """Under a server whose ``send`` is a plain coroutine, a stream's response start
    may be pending while a publish creates a topic its pattern matches: the topic
    joins it at its start, and the event is written after the stream's first bytes."""

    async def main() -> None:
        app = make_app()
        hub = app.hub
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bodies: list[bytes] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await gate
            else:
                bodies.append(message["body"])

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        attaching = asyncio.ensure_future(hub.attach(["late/*"], None, send, receive))
        await settle()
        assert not gate.done() and not bodies
        publish(app, "late/one", "created meanwhile")
        await settle()
        gate.set_result(None)
        subscription = await attaching
        await settle()
        assert b"created meanwhile" in b"".join(bodies)
        hub.detach(subscription)
        _assert_nothing_left(app)

    run(main())


def test_a_pattern_stream_is_present_in_the_topics_it_holds() -> None:
    """Presence counts who receives a topic's events: a pattern stream is present in
    each topic it holds, from when it joins it (a topic created later too), and its
    leave undoes exactly its joins in the news; the webhook events name its patterns."""

    async def main() -> None:
        app = make_app(presence_topics="room/*")
        hub = app.hub
        publish(app, "room/1", "before")
        stream = Stream(app, query=[("topic", "room/*")]).start()
        await settle()
        publish(app, "room/2", "created while it is open")
        await settle()
        assert (await hub.presence("room/1"))["subscribers"] == 1
        assert (await hub.presence("room/2"))["subscribers"] == 1
        joined = {r.topics[0]: r.data["anonymous"] for r in hub.presence_news.news()}
        assert joined == {"room/1/presence": 1, "room/2/presence": 1}
        stream.disconnect()
        await stream.finished()
        left = {r.topics[0]: r.data["anonymous"] for r in hub.presence_news.news()}
        assert left == {"room/1/presence": -1, "room/2/presence": -1}
        assert (await hub.presence("room/2"))["subscribers"] == 0

    run(main())


def test_a_pattern_stream_of_one_topic_moves_to_the_merge_with_a_second() -> None:
    """A pattern stream holding one topic is written as a named one (the single-topic
    sets); a batch that writes to that topic and creates a second matching one moves it
    to the merge mid-batch: every event once, in order."""

    async def main() -> None:
        app = make_app()
        hub = app.hub
        publish(app, "m/1", "zero")
        stream = Stream(app, query=[("topic", "m/*")]).start()
        await settle()
        first = hub.topics.by_name["m/1"]
        subscription = next(iter(hub.subscriptions.values()))
        assert first.lone is subscription  # in sync alone, as a named stream
        hub.publish_nowait(
            [
                PublishRequest(("m/1",), "one"),
                PublishRequest(("m/2",), "two"),
                PublishRequest(("m/1",), "three"),
            ]
        )
        await settle()
        assert stream.data() == ["one", "two", "three"]
        assert first.lone is None and subscription in first.in_sync_multi
        publish(app, "m/2", "four")
        await settle()
        assert stream.data()[-1] == "four"
        stream.disconnect()
        await stream.finished()
        _assert_nothing_left(app)

    run(main())


def test_a_topic_without_history_is_not_held_by_a_pattern() -> None:
    """A named subscriber's topic that nothing was published to goes with that
    subscriber, a pattern stream of it open or not (else anyone could grow the
    topics without bound under an open ``news/*``); its first event makes it
    join the pattern stream."""

    async def main() -> None:
        app = make_app()
        hub = app.hub
        pattern = Stream(app, query=[("topic", "news/*")]).start()
        await settle()
        for n in range(50):
            named = Stream(app, query=[("topic", f"news/{n}")]).start()
            await settle()
            named.disconnect()
            await named.finished()
        assert len(hub.topics) == 0
        named = Stream(app, query=[("topic", "news/held")]).start()
        await settle()
        publish(app, "news/held", "first")
        await settle()
        assert pattern.data() == ["first"] and named.data() == ["first"]
        named.disconnect()
        await named.finished()
        assert hub.topics.by_name["news/held"].subscribers == 1  # the pattern holds it
        pattern.disconnect()
        await pattern.finished()
        _assert_nothing_left(app)

    run(main())


def test_a_break_is_said_to_a_pattern_stream_that_holds_no_topic_yet() -> None:
    """Events a broker lost may be of topics a pattern stream would have held: one
    that holds none yet gets the ``sse-fast-missed`` marker too."""

    async def main() -> None:
        app = make_app()
        hub = app.hub
        empty = Stream(app, query=[("topic", "nothing/yet/*")]).start()
        await settle()
        hub.rejoined(hub.last_position + 10, "relay-restarted")
        await settle()
        assert [e.event for e in empty.events] == ["sse-fast-missed"]
        assert json.loads(empty.events[0].data)["reason"] == "relay-restarted"
        empty.disconnect()
        await empty.finished()

    run(main())


def test_a_pattern_takes_any_topic_but_a_companion() -> None:
    """``pattern_matches``: the one matcher, never a presence companion; ``/presence``
    alone is a topic (a companion has one before its suffix), for the index and for
    the topics a resume names as dropped alike."""
    from sse_fast.hub._matching import pattern_matches

    assert pattern_matches("/presence", ("/*",))
    assert not pattern_matches("a/presence", ("a/*",))
    assert not pattern_matches("a/b/presence", ("*",))
    assert pattern_matches("a/presences", ("a/*",))

    async def main() -> None:
        now = [1000.0]
        app = _app_on(lambda: now[0], topic_ttl=10)
        publish(app, "/presence", "x")
        publish(app, "a/presence", "news")
        await settle()
        now[0] += 11  # past topic_ttl
        assert app.hub.sweep() == 2
        gone, _ = app.hub.topics.forgotten_by(("/*", "a/*"))(0)
        assert set(gone) == {"/presence"}

    run(main())


@settings(max_examples=150, deadline=None)
@given(
    open_patterns=st.lists(_pattern(), max_size=4, unique=True),
    opening=st.lists(_pattern(), max_size=2, unique=True),
    names=st.lists(st.sampled_from([*TOPICS, "u/a/presence", "x/a", "a"]), max_size=6),
)
def test_wants_answers_the_reference_matcher_for_open_and_opening_patterns(
    open_patterns: list[str], opening: list[str], names: list[str]
) -> None:
    """``PatternStreams.wants`` (what a Redis member asks of each birth) is the reference
    matcher over the open streams' patterns and those being opened, companions never;
    an opening pattern stops being wanted when its count goes back to none."""
    from sse_fast.hub._matching import PatternStreams, pattern_matches

    index = PatternStreams()
    if open_patterns:
        index.add(object(), open_patterns)  # type: ignore[arg-type]  # any hashable stream
    index.opening(opening, 1)
    index.opening(opening, 1)  # two streams of these patterns open at once
    for name in names:
        assert index.wants(name) == pattern_matches(name, [*open_patterns, *opening]), name
        assert index.wants(name, opening=False) == pattern_matches(name, open_patterns), name
    index.opening(opening, -1)
    for name in names:
        assert index.wants(name) == pattern_matches(name, [*open_patterns, *opening]), name
    index.opening(opening, -1)
    for name in names:
        assert index.wants(name) == pattern_matches(name, open_patterns), name


def test_new_names_are_indexed_later_and_dropped_ones_never() -> None:
    """New topics' names are noted and indexed together (when a stream asks, or past
    ``_PENDING`` of them): a topic dropped before that is never indexed (nothing leaks),
    one dropped after leaves the index, and a stream finds exactly the live ones."""
    from types import SimpleNamespace

    from sse_fast.hub import _matching

    index = _matching.PatternStreams()
    table: dict[str, Any] = {}
    assert index.existing("t/*", table) == []  # the index exists from here on
    count = 3 * _matching._PENDING
    for n in range(count):
        name = f"t/{n}"
        table[name] = SimpleNamespace(name=name, has_history=True)
        index.created(table[name])
        if n % 3 == 0:  # dropped at once: maybe before its name was indexed
            del table[name]
            index.dropped(name)
    for n in range(1, count, 3):  # dropped later: after its name was indexed (or not)
        del table[f"t/{n}"]
        index.dropped(f"t/{n}")
    assert sorted(index.existing("t/*", table)) == sorted(table)
    assert index._names is not None and set(index._names["t/"]) == set(table)
