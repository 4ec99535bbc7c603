"""Streams of topic patterns on the Redis broker, against a real ``redis-server``: the
topics a pattern matches found in Redis's directory, topics born on another node
while the stream is open (in their place in the order of events), resumes with
topics born while the client was away, births the subscription lost (``CLIENT
KILL``), and honest outcomes past the history. Real processes: redis-server, and the
nodes' servers where the test says so."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError

from sse_fast._patterns import matches
from sse_fast.brokers.redis import publish
from sse_fast.brokers.redis._layout import check_layout
from sse_fast.brokers.redis._scripts import connect
from sse_fast.hub import Hub, PublishRequest
from sse_fast.testing import RedisServer, wait_for

from ..conftest import forgive
from .test_redis import _stop, node, nodes
from .test_relay import Recording

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")


pytestmark = pytest.mark.processes("a real redis-server under nodes that serve pattern streams")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(0) as server:
        yield server


def _data(stream: Recording) -> list[Any]:
    """The data of each event (not the stream's own ``sse-fast-*`` ones), ints read back."""
    return [orjson.loads(e[2]) if e[2].isdigit() else e[2] for e in stream.events() if not e[0]]


def test_a_pattern_stream_gets_existing_and_newborn_topics_in_order(
    redis_server: RedisServer,
) -> None:
    """Node B publishes; node A's pattern stream holds the topics that existed when it
    opened and each one born afterwards, with every event once, in publish order."""

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            await b.publish([PublishRequest(("user/1/old",), "before")])
            await b.publish([PublishRequest(("user/2/x",), "other user")])
            stream = Recording()
            sub = await stream.attach(a, ["user/1/*"])
            assert sub.resume == "none"
            published = []
            for n in range(60):
                name = f"user/1/t{n % 7}" if n % 3 else f"user/1/new{n}"
                await b.publish([PublishRequest((name,), n)])
                published.append(n)
                await b.publish([PublishRequest(("user/2/x",), "not mine")])
            await wait_for(lambda: len(_data(stream)) == 60, timeout=10)
            assert _data(stream) == published
            ids = [int(e[1] or 0) for e in stream.events()]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            # a third node resumes the whole run from the first id, new topics included
            c = node(redis_server.url)
            await c.start()
            try:
                again = Recording()
                first = stream.events()[0][1]
                assert (await again.attach(c, ["user/1/*"], first)).resume == "resumed"
                assert _data(again) == published[1:]
            finally:
                await c.stop()
            assert a.broker.stats()["redis"]["topics_subscribed"] >= 20  # held, not user/2
            assert "user/2/x" not in a.broker.feed.connections[0].topics.held

    asyncio.run(main())


TAILS = ["/".join(parts) for depth in (1, 2) for parts in itertools.product("ab", repeat=depth)]
EXAMPLES = itertools.count()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    patterns=st.lists(
        st.lists(
            st.text(alphabet="ab/*?", min_size=1, max_size=4).filter(
                lambda p: "*" in p or "?" in p
            ),
            min_size=1,
            max_size=2,
            unique=True,
        ),
        min_size=1,
        max_size=3,
    ),
    before=st.lists(st.sampled_from(TAILS), max_size=4),
    after=st.lists(
        st.lists(st.sampled_from(TAILS), min_size=1, max_size=2, unique=True), max_size=15
    ),
)
def test_pattern_streams_match_the_reference_over_two_nodes(
    redis_server: RedisServer,
    patterns: list[list[str]],
    before: list[str],
    after: list[list[str]],
) -> None:
    """Random patterns and topics (Hypothesis) over two nodes: topics published before
    the streams open on node A, then events on node B to topics old and new (born while
    the streams are open): each stream gets exactly the events of the topics its patterns
    match (the reference matcher), in publish order, once. Each example has a prefix of
    its own in the one Redis."""
    root = f"h{next(EXAMPLES)}/"

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            for tail in before:
                await b.publish([PublishRequest((root + tail,), "early")])
            streams = []
            for pats in patterns:
                stream = Recording()
                await stream.attach(a, [root + p for p in pats])
                streams.append(([root + p for p in pats], stream))
            published: list[tuple[list[str], int]] = []
            for n, tails in enumerate(after):
                topics = [root + tail for tail in tails]
                await b.publish([PublishRequest(tuple(topics), n)])
                published.append((topics, n))
            for topic in _every_topic(published, before, root):
                await b.publish([PublishRequest((topic,), len(published))])
                published.append(([topic], len(published)))
            for pats, stream in streams:
                expected = [n for topics, n in published if any(matches(t, pats) for t in topics)]
                await wait_for(
                    lambda s=stream, e=expected: set(e) <= set(_data(s)), timeout=10, what=str(pats)
                )
                assert _data(stream) == expected, pats

    asyncio.run(main())


def _every_topic(published: list[tuple[list[str], int]], before: list[str], root: str) -> list[str]:
    """The topics of ``before`` and ``published``: one more event on each, last, and a
    stream's events being in order, anything else it would get (a repeat, an event of a
    topic it does not match) comes before the last events of its topics."""
    return sorted({root + tail for tail in before} | {t for ts, _ in published for t in ts})


@pytest.mark.parametrize("lagging", [False, True], ids=["prompt", "lagging-subscription"])
def test_a_storm_of_births_keeps_the_order_of_events(
    redis_server: RedisServer, lagging: bool
) -> None:
    """Births overlapping one another (concurrent publishes from two nodes, each to a new
    topic and to one the stream holds already): batches follow each other, and the
    stream still gets every event once, in order of position (its ids increase). With
    a subscription that reads its messages late, the history read of a new topic is
    ahead of them: its events wait for what was published before them."""

    async def main() -> None:
        # (a lagging subscription's probes are late too: not taken for a stale one here)
        a = node(redis_server.url, probe_interval=10.0 if lagging else 0.3)
        b, c = node(redis_server.url), node(redis_server.url)
        for hub in (a, b, c):
            await hub.start()
        try:
            if lagging:
                _lag(a)
            await b.publish([PublishRequest(("feed/hot",), "warm")])
            stream = Recording()
            await stream.attach(a, ["feed/*"])
            ids: list[str] = []
            for round_ in range(8):
                requests = [  # each new topic gets two events, the hot one many
                    hub.publish([PublishRequest((topic,), f"{round_}-{n}")])
                    for n in range(25)
                    for hub, topic in (
                        (b, f"feed/new/{round_}/{n}"),
                        (c, "feed/hot"),
                        (b, f"feed/new/{round_}/{max(0, n - 1)}"),
                    )
                ]
                for found in await asyncio.gather(*requests):
                    ids += found
            # one more, last: the stream is in order of position, so any other event (a
            # repeat) comes before it
            (last,) = await b.publish([PublishRequest(("feed/hot",), "last")])
            ids.append(last)
            await wait_for(lambda: last in [e[1] for e in stream.events()], timeout=15)
            got = [int(e[1] or 0) for e in stream.events()]
            assert got == sorted(int(i) for i in ids)
            # (feed/hot's own birth may reach A as its stream opens: read twice, applied once)
            assert a.broker.feed.connections[0].new_topics.adopted in (200, 201)
        finally:
            await _stop(a, b, c)

    asyncio.run(main())


def _lag(hub: Hub) -> None:
    """Make ``hub``'s subscription read each message 3 ms late (a busy node)."""
    pubsub = hub.broker.feed.connections[0].pubsub
    read = pubsub.get_message

    async def late(*args: Any, **kwargs: Any) -> Any:
        message = await read(*args, **kwargs)
        if message is not None:
            await asyncio.sleep(0.003)  # pace: a subscription that reads its messages late
        return message

    pubsub.get_message = late


def test_a_named_stream_of_a_topic_being_adopted_waits_for_its_history(
    redis_server: RedisServer,
) -> None:
    """A client naming a topic while its birth is being adopted for a pattern stream
    gets its history once loaded (it waits for the adoption's read)."""

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            await Recording().attach(a, ["new/*"])
            (first,) = await b.publish([PublishRequest(("new/t",), "born")])
            named = Recording()
            # at once: the birth is on its way (or being adopted) on node A
            sub = await named.attach(a, ["new/t"], str(int(first) - 1))
            assert sub.resume == "resumed"
            await wait_for(lambda: _data(named) == ["born"])

    asyncio.run(main())


def test_a_resume_finds_topics_born_while_the_client_was_away(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            (first,) = await b.publish([PublishRequest(("shop/7/order/1",), "one")])
            stream = Recording()
            await stream.attach(a, ["shop/7/*"])
            # away: new topics are born on B, and an old one gets more
            await b.publish([PublishRequest(("shop/7/order/2",), "two")])
            await b.publish([PublishRequest(("shop/8/order/1",), "not mine")])
            await b.publish([PublishRequest(("shop/7/order/1",), "three")])
            await b.publish([PublishRequest(("shop/7/order/3",), "four")])
            for hub in (a, b):
                back = Recording()
                assert (await back.attach(hub, ["shop/7/*"], first)).resume == "resumed"
                assert _data(back) == ["two", "three", "four"]

    asyncio.run(main())


def test_births_lost_with_the_subscription_are_found_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Topics born while node A's subscription is being killed over and over still
    reach its pattern stream: the births are read again after each subscription."""

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            stream = Recording()
            await stream.attach(a, ["job/*"])
            published = []
            for n in range(120):
                await b.publish([PublishRequest((f"job/{n}",), n)])
                published.append(n)
                await asyncio.sleep(0.003)  # pace: births spread over A's subscribing again
                if n in (20, 50, 51, 90):
                    client = a.broker.feed.first.client
                    assert client is not None
                    await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            # one more on an old topic, last: the stream is in order of position, so any
            # other event (a repeat) comes before it
            await b.publish([PublishRequest(("job/0",), 120)])
            published.append(120)
            await wait_for(lambda: 120 in _data(stream), timeout=15)
            assert _data(stream) == published
            assert a.metrics.history_breaks_total == 0
            forgive(caplog, "Redis subscription lost")

    asyncio.run(main())


@pytest.mark.parametrize(
    "fault",
    [RedisConnectionError("the marker could not be published"), asyncio.CancelledError()],
    ids=["redis", "foreign-cancel"],
)
def test_a_failed_adoption_subscribes_again_and_finds_its_births(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, fault: BaseException
) -> None:
    """The adoption of a birth fails (its marker cannot be published; or a
    ``CancelledError`` out of another task's future, which ended the adoption task with
    every live message held back): the messages it held back go out, the connection
    subscribes again, and the rescan of births brings the new topic's events, in order,
    once."""

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            stream = Recording()
            await b.publish([PublishRequest(("fail/held",), "warm")])
            await stream.attach(a, ["fail/*"])
            connection = a.broker.feed.connections[0]
            send = connection.send
            failures = []

            async def broken(channel: Any, data: bytes) -> None:
                if not failures:
                    failures.append(data)
                    raise fault
                await send(channel, data)

            connection.send = broken  # type: ignore[method-assign]
            await b.publish([PublishRequest(("fail/held",), "one")])
            await b.publish([PublishRequest(("fail/new",), "two")])
            await b.publish([PublishRequest(("fail/held",), "three")])
            await b.publish([PublishRequest(("fail/held",), "last")])  # in order: others before
            await wait_for(lambda: "last" in _data(stream), timeout=10)
            assert _data(stream) == ["one", "two", "three", "last"]
            assert failures and connection.reconnects >= 1
            forgive(caplog, "could not read topics born", "adopting topics born")

    asyncio.run(main())


def test_an_adoption_whose_subscription_was_replaced_touches_nothing(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscription is killed while a birth's adoption waits to publish its marker, and
    the adoption's cancellation is lost (Python 3.11's ``asyncio.wait_for``, which redis-py
    sends through, can swallow one): it goes on once the new subscription is live. It
    touches nothing: the new topic is loaded once (by the new subscription's resync), its
    events on the new subscription are not held back for that adoption's load (they were,
    then dropped), and every event comes once, in order, with one reconnect (the kill's)."""

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            stream = Recording()
            await b.publish([PublishRequest(("lost/held",), "warm")])
            await stream.attach(a, ["lost/*"])
            connection = a.broker.feed.connections[0]
            send = connection.send
            waiting = asyncio.Event()
            swallowed: list[bytes] = []
            adopting: list[asyncio.Task[Any]] = []
            proceed = asyncio.Event()

            async def late(channel: Any, data: bytes) -> None:
                if data.startswith(b"~") and not swallowed:  # the first marker
                    adopting.append(asyncio.current_task())  # type: ignore[arg-type]
                    waiting.set()
                    try:
                        await asyncio.Event().wait()  # until cancelled
                    except asyncio.CancelledError:
                        swallowed.append(data)  # lost: it goes on, once the test says
                    await asyncio.wait_for(proceed.wait(), 10)
                await send(channel, data)

            connection.send = late  # type: ignore[method-assign]
            hub_load = a.load
            loads: list[str] = []

            def load(name: str, *args: Any) -> None:
                loads.append(name)
                hub_load(name, *args)

            a.load = load  # type: ignore[method-assign]
            reconnects = connection.reconnects
            await b.publish([PublishRequest(("lost/held",), "one")])
            await b.publish([PublishRequest(("lost/new",), "two")])  # a birth: adopted
            await asyncio.wait_for(waiting.wait(), 10)
            await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            await wait_for(lambda: swallowed, what="the adoption's cancellation swallowed")
            await wait_for(lambda: connection.live, what="the new subscription live")
            # on the new subscription, while the lost adoption still waits: delivered, not
            # held back for its load
            await b.publish([PublishRequest(("lost/new",), "three")])
            await wait_for(lambda: "three" in _data(stream), timeout=10)
            proceed.set()  # the lost adoption goes on (its marker sent), then a last event
            await wait_for(lambda: adopting[0].done(), what="the lost adoption over")
            await b.publish([PublishRequest(("lost/held",), "last")])
            await wait_for(lambda: "last" in _data(stream), timeout=10)
            assert _data(stream) == ["one", "two", "three", "last"]
            assert loads.count("lost/new") == 1
            assert connection.reconnects == reconnects + 1
            forgive(caplog, "Redis subscription lost")

    asyncio.run(main())


def test_a_resume_older_than_the_history_age_is_evicted_not_silent(
    redis_server: RedisServer,
) -> None:
    """A topic whose history expired leaves no trace in Redis: a pattern stream
    resuming from before the history age is told it may have missed some."""

    async def main() -> None:
        a = node(redis_server.url, history_age=1.0)
        await a.start()
        try:
            (old,) = await a.publish([PublishRequest(("gone/1",), "old")])

            async def expired() -> bool:  # gone/1's stream, on Redis's clock
                found = await asyncio.to_thread(redis_server.cli, "EXISTS", "sse:t:gone/1")
                return found.strip() == "0"

            await wait_for(expired, timeout=10, interval=0.05, what="gone/1's stream expired")
            c = node(redis_server.url, history_age=1.0)
            await c.start()
            try:
                late = Recording()
                sub = await late.attach(c, ["gone/*"], old)
                assert sub.resume == "evicted"
                missed = orjson.loads(late.events()[0][2])
                assert missed["unnamed_topics"] is True
            finally:
                await c.stop()
        finally:
            await a.stop()

    asyncio.run(main())


def test_topics_from_before_the_directory_enter_it_at_the_next_start(
    redis_server: RedisServer,
) -> None:
    """A Redis written by a version without the directory of topics (its streams, no
    ``sse:names``): the start's layout check puts every topic with a stream in it, once,
    so a pattern finds them; an application publishing straight into Redis (the same
    script) records its topics' births too."""

    async def main() -> None:
        client = connect(redis_server.url)
        a = node(redis_server.url)
        await a.start()
        try:
            for n in range(3):
                await publish(client, f"legacy/{n}", f"old {n}")
            await client.delete("sse:names", "sse:births")  # as an earlier version left it
            await client.set("sse:t:legacy", "not a stream")  # under the prefix, skipped
            async with client.pipeline(transaction=False) as pipe:  # more than a batch of 1,000
                for n in range(2500):
                    pipe.xadd(f"sse:t:bulk/{n}", {"f": "x"}, id="1-0")
                await pipe.execute()
            assert await check_layout([redis_server.url], 1) is None
            names = await client.zrange("sse:names", 0, -1)
            assert sorted(n for n in names if n.startswith(b"legacy/")) == [
                b"legacy/0",
                b"legacy/1",
                b"legacy/2",
            ]
            assert len(names) == 3 + 2500 and b"legacy" not in names
            stream = Recording()
            first = await client.xrange("sse:t:legacy/0")
            start = int(first[0][0].split(b"-")[0]) - 1
            assert (await stream.attach(a, ["legacy/*"], str(start))).resume == "resumed"
            assert _data(stream) == ["old 0", "old 1", "old 2"]
            await publish(client, "legacy/new", "straight into Redis")  # born: told to A
            await wait_for(lambda: _data(stream)[-1:] == ["straight into Redis"])
        finally:
            await a.stop()
            await client.aclose()

    asyncio.run(main())


def test_a_topic_named_at_its_birth_reaches_a_pattern_stream_in_order(
    redis_server: RedisServer,
) -> None:
    """A client names a brand-new topic that a pattern stream on the same node wants,
    while the node's subscription is behind (each message read 3 ms late, the birth
    still on its way): the named stream's history read must not put the new topic's
    events ahead of older events of the pattern stream's other topics."""

    async def main() -> None:
        a = node(redis_server.url, probe_interval=10.0)
        b = node(redis_server.url)
        for hub in (a, b):
            await hub.start()
        try:
            _lag(a)
            await b.publish([PublishRequest(("race/old",), "warm")])
            stream = Recording()
            await stream.attach(a, ["race/*"])
            for n in range(20):
                await asyncio.gather(  # a backlog of old-topic messages on A's subscription
                    *(b.publish([PublishRequest(("race/old",), f"{n}-{k}")]) for k in range(5))
                )
                await b.publish([PublishRequest((f"race/new-{n}",), f"new-{n}")])
                named = asyncio.ensure_future(Recording().attach(a, [f"race/new-{n}"]))
                await asyncio.sleep(0)  # named at once, on A; more old events meanwhile
                await b.publish([PublishRequest(("race/old",), f"{n}-after")])
                await named
            # one more on an old topic, last: the stream is in order of position, so any other
            # event (a repeat) comes before it
            (last,) = await b.publish([PublishRequest(("race/old",), "last")])
            await wait_for(lambda: last in [e[1] for e in stream.events()], timeout=15)
            positions = [int(e[1] or 0) for e in stream.events() if not e[0]]
            assert positions == sorted(positions), "out of order"
            assert len(positions) == len(set(positions)) == 141
        finally:
            await _stop(a, b)

    asyncio.run(main())
