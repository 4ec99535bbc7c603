"""Presence (``hub/_presence.py``, ``brokers/redis/_presence_store.py``): who is subscribed to a
topic, per subject (the JWT ``sub``), across workers and, with Redis, nodes;
``GET /presence`` behind the operations credential; join/leave news on the
companion topic, one event per topic and interval at most."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from sse_fast.hub._presence import PresenceNews, add_up
from sse_fast.testing import RedisServer, ServerProcess, wait_for

SECRET = "presence-test-secret-of-32-bytes!!"
PRESENCE = {"jwt_secret": SECRET, "presence_topics": "room:*", "presence_interval": "0.2"}


def token(sub: str) -> str:
    return jwt.encode(
        {"sub": sub, "exp": int(time.time()) + 600, "sse_fast": {"subscribe": ["*"]}},
        SECRET,
        algorithm="HS256",
    )


def fake(subject: str | None, *topics: str) -> Any:
    return SimpleNamespace(subject=subject, topics=[SimpleNamespace(name=t) for t in topics])


def test_news_is_the_net_change_of_an_interval() -> None:
    news = PresenceNews(["room:*"], 1.0, publish=None)  # type: ignore[arg-type]
    alice, bob, anonymous = fake("alice", "room:1"), fake("bob", "room:1"), fake(None, "room:1")
    news.joined(alice)
    news.joined(bob)
    news.joined(anonymous)
    (event,) = news.news()
    assert event.topics == ("room:1/presence",) and event.event == "presence"
    assert event.data == {"topic": "room:1", "subjects": {"alice": 1, "bob": 1}, "anonymous": 1}
    # a reconnect within the interval is no news; a storm neither
    for _ in range(500):
        news.left(alice)
        news.joined(alice)
    assert news.news() == []
    news.left(bob)
    (event,) = news.news()
    assert event.data == {"topic": "room:1", "subjects": {"bob": -1}, "anonymous": 0}


def test_only_the_named_topics_are_tracked_and_never_a_companion() -> None:
    news = PresenceNews(["room:*", "lobby"], 1.0, publish=None)  # type: ignore[arg-type]
    assert news.tracks("room:1") and news.tracks("lobby")
    assert not news.tracks("news") and not news.tracks("room:1/presence")
    news.joined(fake("a", "news", "room:2"))
    assert [e.topics for e in news.news()] == [("room:2/presence",)]
    assert PresenceNews([], 1.0, publish=None).news() == []  # type: ignore[arg-type]


def test_figures_add_up() -> None:
    parts = [
        {"subscribers": 3, "subjects": {"alice": 2}},
        {"subscribers": 2, "subjects": {"alice": 1, "bob": 1}},
    ]
    assert add_up(parts) == {"subscribers": 5, "subjects": {"alice": 3, "bob": 1}}


async def open_streams(server: ServerProcess, topic: str, subjects: list[str | None]) -> list[Any]:
    clients = []
    for subject in subjects:
        headers = {"Authorization": f"Bearer {token(subject)}"} if subject else {}
        client = server.client(topic, headers=headers)
        await client.connect()
        assert client.status == 200
        clients.append(client)
    return clients


async def presence(server: ServerProcess, topic: str) -> dict[str, Any]:
    status, _, body = await server.get(f"/presence?topic={topic}")
    assert status == 200, body
    figures: dict[str, Any] = json.loads(body)
    return figures


@pytest.mark.processes("presence across real workers and nodes on a real redis-server")
def test_presence_of_one_server_with_its_news() -> None:
    async def main(server: ServerProcess) -> None:
        watcher = server.client("room:1/presence")
        await watcher.connect()
        clients = await open_streams(server, "room:1", ["alice", "alice", "bob", None])
        figures = await presence(server, "room:1")
        assert {k: figures[k] for k in ("topic", "subscribers", "subjects")} == {
            "topic": "room:1",
            "subscribers": 4,
            "subjects": {"alice": 2, "bob": 1},
        }
        events = await presence_adding_up(watcher, ({"alice": 2, "bob": 1}, 1))
        assert all(json.loads(e.data)["topic"] == "room:1" for e in events)
        # a storm of 50 reconnects: at most one event per interval, adding up to no change
        started = time.monotonic()
        for _ in range(50):
            clients[2].close()
            clients[2:3] = await open_streams(server, "room:1", ["bob"])
        clients[0].close()  # and one of alice's two connections leaves
        storm = time.monotonic() - started
        events = await presence_adding_up(watcher, ({"alice": -1}, 0))
        assert 1 <= len(events) <= storm / 0.2 + 3  # one per interval at most, not 101
        assert (await presence(server, "room:1"))["subjects"] == {"alice": 1, "bob": 1}
        # an untracked topic: counted (no news)
        others = await open_streams(server, "news", ["carl"])
        assert (await presence(server, "news"))["subjects"] == {"carl": 1}
        for client in [*clients, *others, watcher]:
            client.close()

    with ServerProcess(**PRESENCE) as server:
        asyncio.run(main(server))


def added_up(events: list[Any]) -> tuple[dict[str, int], int]:
    """The changes of several presence events together (subjects, anonymous)."""
    subjects: dict[str, int] = {}
    anonymous = 0
    for event in events:
        data = json.loads(event.data)
        anonymous += data["anonymous"]
        for subject, change in data["subjects"].items():
            subjects[subject] = subjects.get(subject, 0) + change
    return {k: v for k, v in subjects.items() if v}, anonymous


async def watcher_events(watcher: Any) -> list[Any]:
    """Every event the watcher has been sent so far."""
    out: list[Any] = []
    while True:
        try:
            out += await asyncio.wait_for(watcher.events(), 0.3)
        except TimeoutError:
            return out


async def presence_adding_up(
    watcher: Any, expected: tuple[dict[str, int], int], timeout: float = 10.0
) -> list[Any]:
    """The watcher's presence events until they add up to ``expected`` (each read ends
    after 0.3 s without one): every change is out within three 0.2 s intervals, later
    on a busy machine."""
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while added_up(events) != expected:
        assert time.monotonic() < deadline, f"{added_up(events)} after {len(events)} events"
        events += [e for e in await watcher_events(watcher) if e.event == "presence"]
    return events


@pytest.mark.processes("presence across real workers and nodes on a real redis-server")
def test_presence_asks_for_a_topic_and_the_operations_credential() -> None:
    async def main(server: ServerProcess) -> None:
        status, _, body = await server.get("/presence")
        assert status == 400 and "topic" in json.loads(body)["error"]
        status, _, body = await server.get("/presence?topic=bad%20name")
        assert status == 400

    with ServerProcess(**PRESENCE) as server:
        asyncio.run(main(server))
    # outside ops_networks and without the ops token: refused, like /stats
    with ServerProcess(ops_networks="10.0.0.0/8", ops_token="t" * 32, **PRESENCE) as server:
        status, _, _ = asyncio.run(server.get("/presence?topic=room:1"))
        assert status in (401, 403)


@pytest.mark.processes("presence across real workers and nodes on a real redis-server")
def test_presence_across_workers() -> None:
    async def main(server: ServerProcess) -> None:
        clients = await open_streams(server, "room:7", [f"user{n}" for n in range(12)])
        figures = await wait_for(
            lambda: _when(presence(server, "room:7"), lambda f: f["subscribers"] == 12),
            what="the twelve subscribers of both workers",
        )
        assert figures["subjects"] == {f"user{n}": 1 for n in range(12)}
        assert figures["workers"] == 2
        for client in clients:
            client.close()

    with ServerProcess("--workers", "2", **PRESENCE) as server:
        asyncio.run(main(server))


async def _when(figures: Any, condition: Any) -> Any:
    value = await figures
    return value if condition(value) else None


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.processes("presence across real workers and nodes on a real redis-server")
def test_presence_across_nodes_on_redis(redis: RedisServer) -> None:
    settings = {**PRESENCE, "redis_url": redis.url}

    async def main(a: ServerProcess, b: ServerProcess) -> None:
        on_a = await open_streams(a, "room:9", ["alice", "bob"])
        on_b = await open_streams(b, "room:9", ["alice", "carl", None])
        for node in (a, b):
            figures = await wait_for(
                lambda node=node: _when(presence(node, "room:9"), lambda f: f["subscribers"] == 5),
                what="the five subscribers of both nodes",
            )
            assert figures["subjects"] == {"alice": 2, "bob": 1, "carl": 1}
            assert figures["scope"] == "cluster"
        for client in on_b:
            client.close()
        figures = await wait_for(
            lambda: _when(presence(a, "room:9"), lambda f: f["subscribers"] == 2),
            what="node b's three gone",
        )
        assert figures["subjects"] == {"alice": 1, "bob": 1}
        # an untracked topic: this node's workers only
        others = await open_streams(b, "news", ["dora"])
        assert (await presence(a, "news"))["subscribers"] == 0
        figures = await presence(b, "news")
        assert (figures["scope"], figures["subscribers"]) == ("node", 1)
        # node b stops gracefully with subscribers: its figures go at once, not in 30 s
        more = await open_streams(b, "room:9", ["erin", "erin"])
        await wait_for(
            lambda: _when(presence(a, "room:9"), lambda f: f["subscribers"] == 4),
            what="erin's two on node b",
        )
        assert await asyncio.to_thread(b.stop) == 0
        figures = await wait_for(
            lambda: _when(presence(a, "room:9"), lambda f: f["subscribers"] == 2),
            timeout=5,
            what="node b's figures gone at its stop",
        )
        assert figures["subjects"] == {"alice": 1, "bob": 1}
        for client in [*on_a, *others, *more]:
            client.close()
        await wait_for(
            lambda: _when(presence(a, "room:9"), lambda f: f["subscribers"] == 0),
            what="node a's streams closed",
        )

    with ServerProcess(**settings) as a, ServerProcess(**settings) as b:
        asyncio.run(main(a, b))


@pytest.mark.processes("presence across real workers and nodes on a real redis-server")
def test_a_dead_workers_figures_age_out(redis: RedisServer) -> None:
    """A worker that stops refreshing (killed) is left out once its figures are
    older than STALE, and the reader deletes them; a live one's count, and one of
    0 subscribers is deleted."""
    import orjson
    from redis import asyncio as aioredis

    from sse_fast.brokers.redis._presence_store import STALE, RedisPresence

    async def main() -> None:
        client = aioredis.from_url(redis.url)
        try:
            live = RedisPresence(client, "sse:", "live")
            await live.store({"room:1": {"subscribers": 2, "subjects": {"a": 2}}})
            dead = {"subscribers": 5, "subjects": {"b": 5}, "at": time.time() - STALE - 1}
            await client.hset("sse:p:room:1", "dead", orjson.dumps(dead))
            assert await live.read("room:1") == [
                {"subscribers": 2, "subjects": {"a": 2}, "at": pytest.approx(time.time(), abs=5)}
            ]
            assert await client.hkeys("sse:p:room:1") == [b"live"]  # the reader cleaned up
            assert 0 < await client.ttl("sse:p:room:1") <= 60
            await live.store({"room:1": {"subscribers": 0, "subjects": {}}})
            assert await client.hkeys("sse:p:room:1") == []
        finally:
            await client.aclose()

    asyncio.run(main())


def test_the_interval_is_bounded_by_what_readers_wait() -> None:
    from sse_fast.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="at most 10"):
        Settings(presence_interval=30)


def test_unchanged_figures_are_refreshed_and_a_stop_deletes_them() -> None:
    """A topic whose figures do not change is written again at each refresh (or
    readers would take it for a dead worker's after 30 s); at a graceful stop
    every topic held is written as none."""
    stored: list[dict[str, Any]] = []

    async def store(update: dict[str, Any]) -> None:
        stored.append(update)

    async def publish(events: Any) -> None:
        pass

    figures = {"room:1": {"subscribers": 2, "subjects": {"a": 2}}}

    async def main() -> None:
        news = PresenceNews(["room:*"], 1.0, publish)
        news.joined(fake("a", "room:1"))
        await news._tick(lambda name: figures[name], store, refreshing=False)
        assert stored == [figures] and news.held == {"room:1"}
        await news._tick(lambda name: figures[name], store, refreshing=False)
        assert len(stored) == 1  # nothing changed, no refresh due: nothing written
        await news._tick(lambda name: figures[name], store, refreshing=True)
        assert stored[-1] == figures  # the refresh writes it again
        await news.final(lambda name: figures[name], store)
        assert stored[-1] == {"room:1": {"subscribers": 0, "subjects": {}}}
        assert news.held == set()

    asyncio.run(main())
