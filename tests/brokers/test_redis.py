"""The Redis broker against a real ``redis-server``: members (nodes, workers)
that share one sequence, resumes on any of them, history bounds, and faults:
a killed subscription, Redis restarted (its data lost) and Redis stopped. Real
processes: a real redis-server, stopped, restarted and flushed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sse_fast.brokers.redis import PUBLISH_SCRIPT, RedisBroker, publish
from sse_fast.brokers.redis._scripts import publish_args
from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.settings import Settings
from sse_fast.testing import RedisServer, wait_for

from ..conftest import forgive
from ..support.waiting import until
from .test_relay import Recording

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")


pytestmark = pytest.mark.processes("a real redis-server, stopped, restarted and flushed")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    # small stream nodes, so that approximate trimming (MAXLEN ~) trims in a test
    with RedisServer(0, "--stream-node-max-entries", "4") as server:
        yield server


def redis_micros(server: RedisServer) -> int:
    """Redis's clock now (``TIME``), in microseconds: what positions and history ages are
    measured on."""
    seconds, micros = server.cli("TIME").split()
    return int(seconds) * 1_000_000 + int(micros)


def node(url: str, **options: Any) -> Hub:
    options.setdefault("probe_interval", 0.3)
    return Hub(Settings(), broker=RedisBroker(url, **options))


async def _stop(*hubs: Hub) -> None:
    for hub in hubs:
        await hub.stop()


@contextlib.asynccontextmanager
async def nodes(url: str, count: int = 2) -> AsyncIterator[list[Hub]]:
    """``count`` started nodes (hubs on ``RedisBroker``s) of the Redis at ``url``."""
    hubs = [node(url) for _ in range(count)]
    try:
        for hub in hubs:
            await hub.start()
        yield hubs
    finally:
        await _stop(*hubs)


def test_every_node_delivers_with_the_same_ids_and_resumes_anywhere(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        on_a, on_b, both = Recording(), Recording(), Recording()
        try:
            await on_a.attach(a, ["t"])
            await on_b.attach(b, ["t"])
            await both.attach(b, ["t", "u"])
            ids = await a.publish([PublishRequest(("t",), n) for n in range(3)])
            ids += await b.publish([PublishRequest(("t", "u"), "both", event="e", id="mine")])
            assert ids[-1] == "mine"
            await wait_for(lambda: len(on_b.events()) == 4 and len(both.events()) == 4)
            assert on_a.events() == on_b.events()
            assert [e[1] for e in on_b.events()] == ids
            assert on_b.events()[-1] == ("e", "mine", "both")
            assert both.events() == on_b.events()  # the two-topic event once
            assert a.metrics.published_total == 3 and b.metrics.published_total == 1
            # a third node that never held the topic resumes from Redis
            c = node(redis_server.url)
            await c.start()
            try:
                resumed = Recording()
                assert (await resumed.attach(c, ["t"], ids[0])).resume == "resumed"
                assert [e[1] for e in resumed.events()] == ids[1:]
                fresh = Recording()
                assert (await fresh.attach(c, ["t"], "mine")).resume == "resumed"
                assert fresh.events() == []
                (more,) = await a.publish([PublishRequest(("t",), "more")])
                await wait_for(lambda: len(resumed.events()) == 4)
                assert resumed.events()[-1][1] == more
            finally:
                await c.stop()
        finally:
            await _stop(a, b)

    asyncio.run(main())


def test_a_resume_older_than_the_history_in_redis_is_evicted(redis_server: RedisServer) -> None:
    async def main() -> None:
        a = node(redis_server.url, history_frames=10)
        await a.start()
        try:
            ids = await a.publish([PublishRequest(("t",), n) for n in range(60)])
            c = node(redis_server.url, history_frames=10)
            await c.start()
            try:
                old = Recording()
                assert (await old.attach(c, ["t"], ids[0])).resume == "evicted"
                assert old.events()[0][0] == "sse-fast-missed"
                recent = Recording()
                assert (await recent.attach(c, ["t"], ids[-3])).resume == "resumed"
                assert [e[1] for e in recent.events()] == ids[-2:]
            finally:
                await c.stop()
        finally:
            await a.stop()

    asyncio.run(main())


def test_ids_from_before_the_age_bound_are_evicted(redis_server: RedisServer) -> None:
    async def main() -> None:
        a = node(redis_server.url, history_age=1.0)
        await a.start()
        try:
            (first,) = await a.publish([PublishRequest(("t",), "old")])

            async def aged() -> bool:  # first is past the age bound on Redis's clock (TIME)
                return await asyncio.to_thread(redis_micros, redis_server) - int(first) > 1_000_000

            await wait_for(aged, timeout=10, what="the first event older than the age bound")
            (second,) = await a.publish([PublishRequest(("t",), "new")])
            c = node(redis_server.url, history_age=1.0)
            await c.start()
            try:
                assert (await Recording().attach(c, ["t"], first)).resume == "evicted"
                assert (await Recording().attach(c, ["t"], second)).resume == "resumed"
            finally:
                await c.stop()
        finally:
            await a.stop()

    asyncio.run(main())


def test_a_killed_subscription_is_repaired_with_nothing_lost_or_doubled(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        stream = Recording()
        try:
            await stream.attach(b, ["t", "u"])
            ids: list[str] = []
            for n in range(300):
                topics = ("t",) if n % 3 else ("t", "u")
                ids += await a.publish([PublishRequest(topics, n)])
                if n in (50, 150, 250):
                    await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            await wait_for(lambda: len(stream.events()) == 300, timeout=10)
            assert [e[1] for e in stream.events()] == ids
            assert b.broker.stats()["redis"]["repairs"] >= 1  # kills while reconnecting merge
            assert b.metrics.history_breaks_total == 0
            forgive(caplog, "Redis subscription lost")
        finally:
            await _stop(a, b)

    asyncio.run(main())


@pytest.mark.parametrize("fault", [RuntimeError("a bug"), asyncio.CancelledError()])
def test_a_subscription_whose_repair_raises_anything_is_repaired_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, fault: BaseException
) -> None:
    """The subscription killed, and its repair raising what no Redis fault raises (a bug; a
    ``CancelledError`` out of a future another task cancelled, as a shared confirmation
    did): logged with its traceback and repaired again, and the stream gets every event.
    (It ended the subscription's task for good: the node heard nothing more while its
    publishes were taken.)"""

    async def main() -> None:
        async with nodes(redis_server.url) as (a, b):
            stream = Recording()
            await stream.attach(b, ["t"])
            connection = b.broker.feed.first
            subscribe_all = connection._subscribe_all
            raised = 0

            async def once() -> None:  # the next repair raises, then they work again
                nonlocal raised
                if not raised:
                    raised += 1
                    raise fault
                await subscribe_all()

            connection._subscribe_all = once  # type: ignore[method-assign]
            reconnects = connection.reconnects
            await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            ids = await a.publish([PublishRequest(("t",), n) for n in range(3)])
            await wait_for(lambda: connection.reconnects >= reconnects + 2, what="repaired twice")
            await wait_for(lambda: connection.live, what="live again")
            ids += await a.publish([PublishRequest(("t",), "after")])
            await wait_for(lambda: len(stream.events()) == 4, timeout=10)
            assert [e[1] for e in stream.events()] == ids
            assert raised == 1 and connection.task is not None and not connection.task.done()
            failed = [r for r in caplog.records if "subscription failed" in r.getMessage()]
            assert len(failed) == 1 and failed[0].exc_info is not None  # its traceback
            forgive(caplog, "Redis subscription lost", "subscription failed")

    asyncio.run(main())


def test_a_silent_subscription_is_found_by_its_probes_and_replaced(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection stays up but delivers nothing (here: its subscriptions
    dropped behind the broker's back, as a proxy or a Redis bug might): the
    probes stop coming back, the subscription is replaced and the topic is read
    back from its stream."""

    async def main() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        stream = Recording()
        try:
            await stream.attach(b, ["t"])
            ids = await a.publish([PublishRequest(("t",), "before")])
            await wait_for(lambda: len(stream.events()) == 1)
            pubsub = b.broker.feed.first.pubsub
            await pubsub.connection.send_command("UNSUBSCRIBE")  # no channel left, no error
            started = time.monotonic()
            ids += await a.publish([PublishRequest(("t",), n) for n in range(3)])
            await wait_for(lambda: len(stream.events()) == 4, timeout=5)
            took = time.monotonic() - started
            assert [e[1] for e in stream.events()] == ids  # none lost, none twice
            assert b.broker.feed.first.pubsub is not pubsub  # replaced
            assert 0.3 < took < 2.5  # within two probe intervals (0.3 s), plus the repair
            assert b.broker.stats()["redis"]["repairs"] == 1
            assert "a stale subscription" in caplog.text
            forgive(caplog, "Redis subscription lost")
        finally:
            await _stop(a, b)

    asyncio.run(main())


def test_redis_restarted_without_its_data_is_told_to_open_streams(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        a = node(redis_server.url)
        await a.start()
        stream = Recording()
        try:
            await stream.attach(a, ["t"])
            (before,) = await a.publish([PublishRequest(("t",), "before")])
            await wait_for(lambda: len(stream.events()) == 1)
            await asyncio.to_thread(redis_server.kill)
            with pytest.raises(PublishError) as info:
                await a.publish([PublishRequest(("t",), "refused")])
            assert info.value.status == 503 and info.value.retry_after == 1.0
            await wait_for(lambda: not a.broker.available)
            with pytest.raises(PublishError) as info:  # a new topic cannot be subscribed
                await Recording().attach(a, ["new-topic"])
            assert info.value.status == 503
            await asyncio.to_thread(redis_server.start)
            await wait_for(lambda: a.broker.available, timeout=10)
            (after,) = await a.publish([PublishRequest(("t",), "after")])
            await wait_for(lambda: len(stream.events()) == 3)
            missed = stream.events()[1]
            assert missed[0] == "sse-fast-missed"
            assert orjson.loads(missed[2])["reason"] == "redis-restarted"
            assert stream.events()[2] == (None, after, "after")
            assert int(after) > int(missed[1]) > int(before)
            assert (await Recording().attach(a, ["t"], before)).resume == "evicted"
            forgive(caplog, "Redis subscription lost", "Redis does not answer")
        finally:
            await a.stop()

    asyncio.run(main())


async def _repaired(hub: Hub, breaks: int) -> None:
    """Wait until ``hub`` repaired its ``breaks``-th history break and can publish."""
    await wait_for(lambda: hub.broker.stats()["redis"]["history_breaks"] == breaks, timeout=10)
    await wait_for(lambda: hub.broker.available, timeout=10)


async def _received(stream: Recording, event_id: str) -> None:
    """Wait until ``stream`` was sent the event ``event_id``."""
    await wait_for(lambda: any(e[1] == event_id for e in stream.events()))


@contextlib.asynccontextmanager
async def watching(hub: Hub) -> AsyncIterator[Recording]:
    """``hub`` started, with a stream of ``t`` open on it; stopped at the end."""
    await hub.start()
    try:
        stream = Recording()
        await stream.attach(hub, ["t"])
        yield stream
    finally:
        await hub.stop()


@contextlib.asynccontextmanager
async def started(hub: Hub) -> AsyncIterator[Hub]:
    """``hub`` started, and stopped at the end."""
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


def _marker(event: tuple[str | None, str | None, str]) -> str | None:
    """The reason of an ``sse-fast-missed`` event (None for another event)."""
    return orjson.loads(event[2])["reason"] if event[0] == "sse-fast-missed" else None


def test_redis_that_lost_its_data_twice_is_known_to_a_node_started_afterwards(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each restart of Redis without its data starts a dataset whose floor (a
    position recorded in Redis with the epoch) every node reads: a node started
    after two of them answers a resume from either earlier dataset ``evicted``,
    as the node that lived through them does, and one from the newest ``resumed``."""

    async def main() -> None:
        a = node(redis_server.url)
        datasets: list[list[str]] = []
        async with watching(a) as stream:
            for restart in range(3):
                if restart:
                    await asyncio.to_thread(redis_server.restart)
                    await _repaired(a, breaks=restart)
                datasets.append(await a.publish([PublishRequest(("t",), n) for n in range(3)]))
                # delivered before the next restart (or lost with Redis: a marker only)
                await _received(stream, datasets[-1][-1])
            first, second, third = datasets
            got = stream.events()
            assert [_marker(e) for e in got] == [None] * 3 + (["redis-restarted"] + [None] * 3) * 2
            assert [e[1] for e in got if e[0] is None] == first + second + third
            assert int(first[-1]) < int(got[3][1]) < int(second[0])
            assert int(second[-1]) < int(got[7][1]) < int(third[0])
            async with started(node(redis_server.url)) as c:
                for hub in (c, a):
                    for old in (first[0], second[0]):
                        late = Recording()
                        assert (await late.attach(hub, ["t"], old)).resume == "evicted"
                        assert late.events()[0][0] == "sse-fast-missed"
                    recent = Recording()
                    assert (await recent.attach(hub, ["t"], third[0])).resume == "resumed"
                    assert [e[1] for e in recent.events()] == third[1:]
            forgive(caplog, "Redis subscription lost", "Redis does not answer")

    asyncio.run(main())


def test_events_published_while_a_node_reconnects_reach_its_streams(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Published straight into Redis without a pause from the moment it is back
    (empty) until well after the node repaired: every event Redis has reaches the
    open stream, after the ``redis-restarted`` marker, none twice. (Rings and
    Redis history hold all of them: 150 to 550 were published before the repair
    here, and what a repair reads back is bounded by the rings, tested below.)"""
    import redis.asyncio as aioredis

    room = 20_000  # more than can be published before the assertion below gives up
    settings = Settings(ring_max_frames=room)

    async def main() -> None:
        a = Hub(
            settings, broker=RedisBroker(redis_server.url, probe_interval=0.3, load_frames=room)
        )
        client = aioredis.Redis.from_url(redis_server.url)
        async with client, watching(a) as stream:
            (before,) = await a.publish([PublishRequest(("t",), "before")])
            await wait_for(lambda: len(stream.events()) == 1)
            await asyncio.to_thread(redis_server.restart)
            published: list[str] = []
            while a.broker.stats()["redis"]["history_breaks"] == 0 or len(published) < 300:
                n = len(published)
                published.append(await publish(client, "t", n, history_frames=room))
                assert len(published) < room, "the node did not repair"
            await wait_for(lambda: stream.events()[-1][1] == published[-1])
            events = stream.events()
            assert [_marker(e) for e in events[:2]] == [None, "redis-restarted"]
            assert [e[1] for e in events] == [before, events[1][1], *published]
            assert int(before) < int(events[1][1]) < int(published[0])
            forgive(caplog, "Redis subscription lost", "Redis does not answer")

    asyncio.run(main())


def test_more_events_since_redis_came_back_than_a_ring_holds_are_said_trimmed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A node reads back what Redis has after the dataset's floor up to the size of
    its rings (``load_frames``): of 8 events published before it repaired, with
    rings of 5, the newest 5 reach the open stream, after a
    ``redis-history-trimmed`` marker standing for the other 3."""
    import redis

    async def main() -> None:
        a = node(redis_server.url, load_frames=5)
        async with watching(a) as stream:
            (before,) = await a.publish([PublishRequest(("t",), "before")])
            await _received(stream, before)
            await asyncio.to_thread(redis_server.kill)
            await wait_for(lambda: not a.broker.available)
            # Redis back and 8 events published while this loop (the node) is blocked:
            # all of them are in Redis before the node can repair
            redis_server.start()
            with redis.Redis(port=redis_server.port) as client:
                args = publish_args("sse:", [PublishRequest(("t",), n) for n in range(8)], 1000, 60)
                ids = [
                    i.decode()
                    for i in client.eval(PUBLISH_SCRIPT, 2, "sse:position", "sse:epoch", *args)
                ]
            await _received(stream, ids[-1])
            events = stream.events()
            assert [_marker(e) for e in events] == [
                None,
                "redis-restarted",
                "redis-history-trimmed",
            ] + [None] * 5
            assert [e[1] for e in events if e[0] is None] == [before, *ids[3:]]
            assert int(before) < int(events[1][1]) < int(ids[0])
            assert events[2][1] == ids[2]  # the break stands where the trimmed ones end
            forgive(caplog, "Redis subscription lost", "Redis does not answer")

    asyncio.run(main())


def test_ids_from_before_redis_lost_its_data_never_resolve_to_new_events(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Positions handed out before Redis lost its data may lie above the ones it
    hands out after (they were ahead of its clock: a burst, or its clock stepped
    back; simulated by setting the position ahead). The node that held them
    raises the dataset's floor above them: a node started afterwards answers a
    resume from them ``evicted``, never ``resumed`` after an unrelated event."""
    import redis.asyncio as aioredis

    async def main() -> None:
        a = node(redis_server.url)
        client = aioredis.Redis.from_url(redis_server.url)
        async with client, watching(a) as stream:
            ahead = str(int(time.time() * 1_000_000) + 600_000_000)  # ten minutes
            await asyncio.to_thread(redis_server.cli, "SET", "sse:position", ahead)
            old = await a.publish([PublishRequest(("t",), n) for n in range(3)])
            await wait_for(lambda: len(stream.events()) == 3)
            await asyncio.to_thread(redis_server.restart)
            # published before the node repaired, at positions below the old ones
            early = [await publish(client, "t", f"early {n}") for n in range(2)]
            assert int(early[-1]) < int(old[0])
            await _repaired(a, breaks=1)
            (after,) = await a.publish([PublishRequest(("t",), "after")])
            await wait_for(lambda: stream.events()[-1][1] == after)
            events = stream.events()
            # the early ones cannot follow the old ones in order: the marker stands for them
            assert [e[1] for e in events if e[0] is None] == [*old, after]
            assert [_marker(e) for e in events] == [None] * 3 + ["redis-restarted", None]
            assert int(old[-1]) < int(events[3][1]) < int(after)
            async with started(node(redis_server.url)) as c:
                for hub in (c, a):
                    assert (await Recording().attach(hub, ["t"], old[0])).resume == "evicted"
                    recent = Recording()
                    assert (await recent.attach(hub, ["t"], events[3][1])).resume == "resumed"
                    assert [e[1] for e in recent.events()] == [after]
            forgive(caplog, "Redis subscription lost", "Redis does not answer")

    asyncio.run(main())


def test_a_flush_under_a_live_subscription_is_found_by_the_next_history_read(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """FLUSHALL leaves the subscription up: the next topic a node loads finds the
    new epoch, is refused with 503 while the node repairs (so that no topic of
    the new dataset gets ahead of the marker), and the open streams are told."""

    async def main() -> None:
        a = node(redis_server.url)
        async with watching(a) as stream:
            await a.publish([PublishRequest(("t",), "before")])
            await wait_for(lambda: len(stream.events()) == 1)
            await asyncio.to_thread(redis_server.cli, "FLUSHALL")
            with pytest.raises(PublishError) as info:
                await Recording().attach(a, ["u"])
            assert info.value.status == 503
            await _repaired(a, breaks=1)
            # the marker is stored by the repair and written at the next flush
            await wait_for(lambda: len(stream.events()) == 2)
            assert [_marker(e) for e in stream.events()] == [None, "redis-restarted"]
            assert (await Recording().attach(a, ["u"])).resume == "none"
            forgive(caplog, "Redis subscription lost")

    asyncio.run(main())


def test_redis_behind_what_a_node_saw_is_told_unless_publishes_wait_for_replicas(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """After a failover to a replica that lagged, Redis lacks events nodes saw and
    its position is behind them (simulated here: the newest event removed and the
    position set back, as on such a replica). Without --redis-wait-replicas those
    events may have been acknowledged: streams are told. With it they were not
    (their publishers got 503), so nothing is broken."""

    async def main() -> None:
        told, waits = node(redis_server.url), node(redis_server.url, wait_replicas=1)
        await told.start()
        await waits.start()
        streams = Recording(), Recording()
        try:
            for hub, stream in zip((told, waits), streams, strict=True):
                await stream.attach(hub, ["t"])
            first, second = await told.publish([PublishRequest(("t",), n) for n in range(2)])
            await wait_for(lambda: all(len(s.events()) == 2 for s in streams))
            await asyncio.to_thread(redis_server.cli, "XDEL", "sse:t:t", f"{second}-0")
            await asyncio.to_thread(redis_server.cli, "SET", "sse:position", first)
            await asyncio.to_thread(redis_server.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            await wait_for(lambda: told.broker.stats()["redis"]["history_breaks"] == 1)
            with pytest.raises(PublishError) as info:  # no replica here to confirm it
                await waits.publish([PublishRequest(("t",), "unconfirmed")])
            assert info.value.status == 503 and "replicas confirmed" in str(info.value)
            (after,) = await told.publish([PublishRequest(("t",), "after")])
            await wait_for(lambda: all(s.events()[-1][1] == after for s in streams), timeout=5)
            missed = streams[0].events()[2]
            assert missed[0] == "sse-fast-missed"
            assert orjson.loads(missed[2])["reason"] == "redis-lost-writes"
            assert int(missed[1]) > int(second)  # above what the node saw
            assert (await Recording().attach(told, ["t"], first)).resume == "evicted"
            later = node(redis_server.url)  # the floor is in Redis: a node started later knows
            await later.start()
            try:
                assert (await Recording().attach(later, ["t"], first)).resume == "evicted"
            finally:
                await later.stop()
            assert [e[0] for e in streams[1].events()] == [None] * 4  # 0, 1, unconfirmed, after
            assert waits.broker.stats()["redis"]["history_breaks"] == 0
            forgive(caplog, "Redis subscription lost", "Redis is behind")
        finally:
            await _stop(told, waits)

    asyncio.run(main())


def test_redis_stopped_fails_publishes_fast_then_heals_without_loss(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        stream = Recording()
        try:
            await stream.attach(b, ["t"])
            ids = await a.publish([PublishRequest(("t",), "before")])
            await asyncio.to_thread(redis_server.stop)
            started = time.monotonic()
            with pytest.raises(PublishError) as info:
                await a.publish([PublishRequest(("t",), "during")])
            assert info.value.status == 503 and time.monotonic() - started < 3
            await wait_for(lambda: not b.broker.available, timeout=5)
            assert b.broker.unavailable_for > 0
            await asyncio.to_thread(redis_server.cont)
            await wait_for(lambda: a.broker.available and b.broker.available, timeout=10)
            ids += await a.publish([PublishRequest(("t",), "after")])
            # "during" may or may not have been published: its answer was lost
            await wait_for(lambda: stream.events()[-1:] and stream.events()[-1][1] == ids[-1])
            received = [e[1] for e in stream.events() if e[0] is None]
            assert received[0] == ids[0] and received[-1] == ids[-1] and len(received) <= 3
            assert not [e for e in stream.events() if e[0] == "sse-fast-missed"]
            forgive(caplog, "Redis subscription lost", "Redis does not answer")
        finally:
            await _stop(a, b)

    asyncio.run(main())


def test_applications_publish_straight_into_redis(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    async def main() -> None:
        b = node(redis_server.url)
        await b.start()
        client = aioredis.Redis.from_url(redis_server.url)
        stream = Recording()
        try:
            await stream.attach(b, ["orders"])
            event_id = await publish(client, "orders", {"n": 1}, event="created")
            await publish(client, ["orders", "other"], "text", id="o-2")
            await wait_for(lambda: len(stream.events()) == 2)
            assert stream.events() == [("created", event_id, '{"n":1}'), (None, "o-2", "text")]
            with pytest.raises(PublishError, match="CR, LF or NUL"):
                await publish(client, "orders", 1, id="a\nb")
            # the raw command, as another language would send it
            raw = await client.eval(
                PUBLISH_SCRIPT, 2, "sse:position", "sse:epoch",
                "sse:", "e1", 1000, 86_400_000_000, 1, "", "data: from lua\n\n", 0, 1, "orders",
            )  # fmt: skip
            await wait_for(lambda: len(stream.events()) == 3)
            assert stream.events()[-1] == (None, raw[0].decode(), "from lua")
            with pytest.raises(Exception, match="frame must be SSE fields"):
                await client.eval(
                    PUBLISH_SCRIPT, 2, "sse:position", "sse:epoch",
                    "sse:", "e1", 1000, 86_400_000_000, 1, "", "data: a\n\ndata: b\n\n", 0, 1,
                    "orders",
                )  # fmt: skip
        finally:
            await client.aclose()
            await b.stop()

    asyncio.run(main())


def test_calls_made_together_go_into_redis_together(redis_server: RedisServer) -> None:
    """Sixty-four tasks, each publishing three events to a topic of its own one after the
    other, through ``publish``: far fewer script calls than calls (Redis's own count),
    every call its own id, each topic's events delivered in the order of its calls, and
    a bad event among them fails alone."""
    import redis.asyncio as aioredis

    async def main() -> None:
        b = node(redis_server.url)
        await b.start()
        client = aioredis.Redis.from_url(redis_server.url)
        stream = Recording()
        topics = [f"t/{k}" for k in range(64)]

        async def user(k: int) -> list[str]:  # a topic's calls, one after the other
            return [await publish(client, topics[k], f"{k} {n}") for n in range(3)]

        async def bad() -> None:
            await publish(client, "t/1", "bad", id="a\nb")

        try:
            await stream.attach(b, topics)
            before = await client.info("commandstats")
            *answers, refused = await asyncio.gather(
                *(user(k) for k in range(64)), bad(), return_exceptions=True
            )
            after = await client.info("commandstats")
            assert isinstance(refused, PublishError) and "CR, LF or NUL" in str(refused)
            ids = [i for got in answers for i in got]  # type: ignore[union-attr]
            assert len(set(ids)) == 192
            scripts = after["cmdstat_eval"]["calls"] - before.get("cmdstat_eval", {}).get(
                "calls", 0
            )
            assert 1 <= scripts < 40, scripts  # 192 calls in a few dozen script calls
            await wait_for(lambda: len(stream.events()) == 192)
            delivered = stream.events()
            assert sorted(e[1] for e in delivered) == sorted(ids)
            for k in range(64):  # the order of the calls, per topic
                seen = [e[2] for e in delivered if e[2].split()[0] == str(k)]
                assert seen == [f"{k} {n}" for n in range(3)], seen
        finally:
            await client.aclose()
            await b.stop()

    asyncio.run(main())


def test_a_node_subscribes_only_to_topics_its_clients_hold(redis_server: RedisServer) -> None:
    async def main() -> None:
        a = node(redis_server.url)
        await a.start()
        try:

            def subscribers(topic: str) -> int:
                reply = redis_server.cli("PUBSUB", "NUMSUB", f"sse:c:{topic}").split()
                return int(reply[-1])

            assert await asyncio.to_thread(subscribers, "held") == 0
            await a.publish([PublishRequest(("not-held",), 1)])
            loop = asyncio.get_running_loop()
            subscription = await a.attach(["held"], None, Recording().send, loop.create_future)
            assert await asyncio.to_thread(subscribers, "held") == 1
            assert await asyncio.to_thread(subscribers, "not-held") == 0
            assert "not-held" not in a.topics.by_name
            a.detach(subscription)  # the last subscriber of a topic without history

            async def unsubscribed() -> bool:  # in the background
                return await asyncio.to_thread(subscribers, "held") == 0

            await wait_for(unsubscribed, timeout=5, what="unsubscribed after the detach")
        finally:
            await a.stop()

    asyncio.run(main())


def test_a_storm_of_new_topics_is_loaded_in_a_few_commands(redis_server: RedisServer) -> None:
    """1,000 streams on 1,000 topics new to the node, all at once (a node that just
    started, or a reconnect storm): every one is served, with their history,
    through a few batched SUBSCRIBEs and history reads, not a Redis connection
    and a script each (redis-py's pool would refuse past its 100 connections)."""

    async def main() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        try:
            names = [f"user/{n}" for n in range(1000)]
            published = await a.publish([PublishRequest((name,), name) for name in names[:10]])

            def evalsha_calls() -> int:
                for line in redis_server.cli("INFO", "commandstats").splitlines():
                    if line.startswith("cmdstat_evalsha:"):
                        return int(line.split("calls=")[1].split(",")[0])
                return 0

            before = await asyncio.to_thread(evalsha_calls)
            streams = [Recording() for _ in names]
            since = str(int(published[0]) - 1)  # resumes from just before those events
            attached = await asyncio.gather(
                *(s.attach(b, [name], since) for s, name in zip(streams, names, strict=True))
            )
            assert {one.resume for one in attached} == {"resumed"}
            reads = await asyncio.to_thread(evalsha_calls) - before
            assert reads <= 2 * (len(names) // 256 + 1), reads  # batched (and chunked) reads
            assert b.broker.stats()["redis"]["topics_subscribed"] == len(names)
            await wait_for(lambda: all(len(s.events()) == 1 for s in streams[:10]))
            assert [s.events()[0][1] for s in streams[:10]] == published  # history too
            (late,) = await a.publish([PublishRequest(("user/999",), "late")])
            await wait_for(lambda: streams[-1].events()[-1:] == [(None, late, "late")])
        finally:
            await _stop(a, b)

    asyncio.run(main())


def test_a_redis_server_writes_in_a_directory_of_its_own_gone_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RedisServer`` runs each ``redis-server`` in a new directory, removed when it is
    killed: a replica's full sync (or a SAVE) wrote dump.rdb where the tests ran, and
    the next Redis started there, another test's, loaded it; a restart is a Redis
    without the data, as its docstring says."""
    from sse_fast.testing import HOST

    monkeypatch.chdir(tmp_path)
    with RedisServer() as primary:
        primary.cli("SET", "k", "v")
        primary.cli("SAVE")
        first = primary.directory
        assert (Path(first) / "dump.rdb").exists()
        primary.restart()
        assert primary.cli("GET", "k").strip() == "", "a restart loaded the old data"
        assert not Path(first).exists() and primary.directory != first
        with RedisServer(0, "--replicaof", HOST, str(primary.port)) as replica:
            until(
                lambda: "master_link_status:up" in replica.cli("INFO", "replication"),
                10,
                "the replica to sync",
            )
            directories = [primary.directory, replica.directory]
    assert list(tmp_path.iterdir()) == [], "written where the test ran"
    assert not any(Path(d).exists() for d in directories)
