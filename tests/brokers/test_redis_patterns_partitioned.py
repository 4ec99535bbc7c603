"""Streams of topic patterns on a partitioned Redis layout (``--redis-partitions 8`` on one
``redis-server``; the Cluster's own test is in ``test_redis_cluster.py``): the directory and
births of every partition, the stream's cursor with its rest (``hub/_cursor.py``), and
resumes on another node, births while away included, against a reference matcher. Real
processes: pattern streams over a real partitioned Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_fast._patterns import matches
from sse_fast.brokers.redis import RedisBroker, publish
from sse_fast.brokers.redis._layout import check_layout
from sse_fast.brokers.redis._partitions import cluster_tags, partition_of
from sse_fast.brokers.redis._scripts import connect
from sse_fast.hub import Hub, PublishRequest
from sse_fast.hub._cursor import REST, parse_cursor
from sse_fast.settings import Settings
from sse_fast.testing import RedisServer, wait_for

from ..conftest import forgive
from .test_redis import redis_micros
from .test_relay import Recording

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")

N = 8


pytestmark = pytest.mark.processes("pattern streams over a real partitioned Redis")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(0) as server:
        yield server


def node(url: str, **options: Any) -> Hub:
    options.setdefault("probe_interval", 0.3)
    options.setdefault("partitions", N)
    return Hub(Settings(), broker=RedisBroker(url, **options))


@contextlib.asynccontextmanager
async def nodes(url: str, count: int = 2, **options: Any) -> AsyncIterator[list[Hub]]:
    hubs = [node(url, **options) for _ in range(count)]
    try:
        for hub in hubs:
            await hub.start()
        yield hubs
    finally:
        for hub in hubs:
            await hub.stop()


def _data(stream: Recording) -> list[Any]:
    """The data of each event (not the stream's own ``sse-fast-*`` ones), ints read back."""
    return [orjson.loads(e[2]) if e[2].isdigit() else e[2] for e in stream.events() if not e[0]]


def _check_order(got: list[int], published: list[tuple[list[str], int]]) -> None:
    """The events of each partition in the order published. Between partitions the order
    means nothing (``brokers/__init__.py``), and an event over several partitions comes in
    its place in one of them, whichever copy is first: such events are not compared."""
    partitions = {n: {partition_of(t, N) for t in topics} for topics, n in published}
    for p in range(N):
        mine = [n for n in got if partitions[n] == {p}]
        assert mine == sorted(mine), (p, mine)


TAILS = ["/".join(parts) for depth in (1, 2) for parts in itertools.product("abc", repeat=depth)]
EXAMPLES = itertools.count()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    patterns=st.lists(
        st.lists(
            st.text(alphabet="abc/*?", min_size=1, max_size=4).filter(
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
    cut=st.floats(0, 1),
)
def test_pattern_streams_over_partitions_match_the_reference_and_resume_anywhere(
    redis_server: RedisServer,
    patterns: list[list[str]],
    before: list[str],
    after: list[list[str]],
    cut: float,
) -> None:
    """Random patterns and topics (Hypothesis) over 8 partitions and two nodes: topics
    published before the streams open on node A, then events on node B to topics old
    and new (born while the streams are open, in any partition): each stream gets
    exactly the events of the topics its patterns match (the reference matcher), once,
    each partition's in order. A third node resumes each stream from one of its ids:
    ``resumed``, with exactly the events after it, the topics born after it included."""
    root = f"h{next(EXAMPLES)}/"

    async def main() -> None:
        async with nodes(redis_server.url, 3) as (a, b, c):
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
            # one more event on each topic, last: each topic's events are in order, so
            # anything else a stream would get (a repeat, an event of a topic it does not
            # match) comes before the last events of its topics
            seen = {root + tail for tail in before} | {t for ts, _ in published for t in ts}
            for topic in sorted(seen):
                await b.publish([PublishRequest((topic,), len(published))])
                published.append(([topic], len(published)))
            for pats, stream in streams:
                expected = [n for topics, n in published if any(matches(t, pats) for t in topics)]
                await wait_for(
                    lambda s=stream, e=expected: set(e) <= set(_data(s)), timeout=10, what=str(pats)
                )
                got = _data(stream)
                assert sorted(got) == expected, pats
                _check_order(got, published)
                events = stream.events()
                ids = [stream.body.split(b"\n", 1)[0][4:].decode()] + [e[1] for e in events]
                for one in ids:
                    assert one is not None and REST in (parse_cursor(one) or {}), one
                k = int(cut * (len(ids) - 1))
                again = Recording()
                assert (await again.attach(c, pats, ids[k])).resume == "resumed"
                assert sorted(_data(again)) == sorted(got[k:]), (pats, k)

    asyncio.run(main())


def test_the_rest_moves_where_nothing_is_published(redis_server: RedisServer) -> None:
    """A pattern stream whose topics are all in one partition, open longer than the
    history age (2 s): the rest of its cursor moves with Redis time (the probes'
    ``confirm``), so a resume from its last id is ``resumed`` (with the open-time rest it
    would be ``evicted``: a topic of another partition could have expired meanwhile),
    and a topic born meanwhile in another partition reaches it."""

    async def main() -> None:
        async with nodes(redis_server.url, 3, history_age=2.0) as (a, b, c):
            await b.publish([PublishRequest(("q/one",), "warm")])
            stream = Recording()
            await stream.attach(a, ["q/*"])
            opened = parse_cursor(stream.body.split(b"\n", 1)[0][4:].decode())
            assert opened is not None
            for n in range(8):
                await asyncio.sleep(0.4)  # pace: open past the history age, events meanwhile
                await b.publish([PublishRequest(("q/one",), n)])
            await wait_for(lambda: len(_data(stream)) >= 8)
            last = stream.events()[-1][1]
            assert last is not None
            positions = parse_cursor(last)
            assert positions is not None
            assert positions[REST] - opened[REST] > 2_000_000  # µs: it moved with time
            again = Recording()
            assert (await again.attach(c, ["q/*"], last)).resume == "resumed"
            other = next(f"q/x{i}" for i in range(99) if partition_of(f"q/x{i}", N) != 0)
            await b.publish([PublishRequest((other,), "born")])
            await wait_for(lambda: _data(again)[-1:] == ["born"])
            await wait_for(lambda: _data(stream)[-1:] == ["born"])

    asyncio.run(main())


def test_births_lost_with_the_subscription_are_found_in_every_partition(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Topics born in every partition while node A's subscription is killed over and
    over still reach its pattern stream, once, each partition's in order; a resume on
    another node from the middle gets the rest."""

    async def main() -> None:
        async with nodes(redis_server.url, 2) as (a, b):
            stream = Recording()
            await stream.attach(a, ["job/*"])
            published = []
            for n in range(120):
                await b.publish([PublishRequest((f"job/{n}",), n)])
                published.append(([f"job/{n}"], n))
                await asyncio.sleep(0.003)  # pace: births spread over A's subscribing again
                if n in (20, 50, 51, 90):
                    await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            # one more event in each partition, last: each partition's events are in order,
            # so any other (a repeat) comes before its partition's last
            lasts = {partition_of(f"job/{n}", N): f"job/{n}" for n in range(120)}
            for topic in lasts.values():
                await b.publish([PublishRequest((topic,), len(published))])
                published.append(([topic], len(published)))
            await wait_for(lambda: set(range(len(published))) <= set(_data(stream)), timeout=15)
            got = _data(stream)
            assert sorted(got) == list(range(len(published)))
            _check_order(got, published)
            # (CLIENT KILL cuts every node's subscription: a node started afterwards resumes)
            async with nodes(redis_server.url, 1) as (c,):
                middle = stream.events()[59][1]
                again = Recording()
                assert (await again.attach(c, ["job/*"], middle)).resume == "resumed"
                assert sorted(_data(again)) == sorted(got[60:])
            forgive(caplog, "Redis subscription lost")

    asyncio.run(main())


def test_a_resume_past_the_history_age_is_evicted_with_unnamed_topics(
    redis_server: RedisServer,
) -> None:
    """A cursor whose rest is older than the history age (a topic of a partition the
    stream has none of may have expired with its events): ``evicted``, saying so."""

    async def main() -> None:
        async with nodes(redis_server.url, 2, history_age=1.0) as (a, b):
            await b.publish([PublishRequest(("old/one",), "warm")])
            stream = Recording()
            await stream.attach(a, ["old/*"])
            await b.publish([PublishRequest(("old/one",), 1)])
            await wait_for(lambda: len(_data(stream)) >= 1)
            last = stream.events()[-1][1]
            await a.stop()  # its probes no longer move anything
            cursor = parse_cursor(last or "")
            assert cursor is not None

            async def aged() -> bool:  # its rest, past the history age on Redis's clock
                now = await asyncio.to_thread(redis_micros, redis_server)
                return now - cursor[REST] > 1_000_000

            await wait_for(aged, timeout=10, what="the cursor's rest older than the history age")
            again = Recording()
            assert (await again.attach(b, ["old/*"], last)).resume == "evicted"
            (missed,) = [e for e in again.events() if e[0] == "sse-fast-missed"]
            assert orjson.loads(missed[2])["unnamed_topics"] is True

    asyncio.run(main())


def test_topics_from_before_the_directories_enter_them_at_the_next_start(
    redis_server: RedisServer,
) -> None:
    """A partitioned layout written by a version without directories of topics: the
    start's layout check puts the topic of every stream in its partition's ``names``,
    once (a marker says so), and a pattern stream finds them; topics published straight
    into Redis (``sse_fast.brokers.redis.publish``) are born as a node's are."""

    async def main() -> None:
        client = connect(redis_server.url)
        a = node(redis_server.url)
        await a.start()
        try:
            assert await check_layout([redis_server.url], N) is None  # marked filled
            for n in range(6):
                await publish(client, f"legacy/{n}", f"old {n}")
            tags = cluster_tags(N)
            await client.delete("sse:directory", *(f"sse:{{{t}}}:names" for t in tags))
            assert await check_layout([redis_server.url], N) is None
            found = [await client.zrange(f"sse:{{{t}}}:names", 0, -1) for t in tags]
            assert sorted(n for names in found for n in names) == [
                f"legacy/{n}".encode() for n in range(6)
            ]
            for p, names in enumerate(found):
                assert all(partition_of(n.decode(), N) == p for n in names)
            stream = Recording()
            assert (await stream.attach(a, ["legacy/*"])).resume == "none"
            await publish(client, "legacy/new", "straight into Redis")  # born: told to A
            await wait_for(lambda: _data(stream)[-1:] == ["straight into Redis"])
            await publish(client, "legacy/3", "again")
            await wait_for(lambda: _data(stream)[-1:] == ["again"])
        finally:
            await a.stop()
            await client.aclose()

    asyncio.run(main())
