"""The Redis broker on a real Redis Cluster (3 masters, 3 replicas; issue 42, part C2):
128 partitions over the masters' slots, one connection per master (SSUBSCRIBE, the
scripts' SPUBLISH): every topic's events in order, once, on every node; a master
killed (kill -9): its topics answer 503 with Retry-After until its replica takes over,
the other masters' topics are published every time, and nothing acknowledged is lost
or repeated; ``--redis-wait-replicas`` confirmed on the partition's own master (its
replica frozen: 503); a node configured with another layout refused at start. Hubs in
this process, then ``sse-fast serve`` nodes. Real processes: a real Redis Cluster:
masters killed, slots moved."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sse_fast.brokers.redis import RedisBroker
from sse_fast.brokers.redis._connection import Connection
from sse_fast.brokers.redis._layout import check_layout
from sse_fast.brokers.redis._partitions import cluster_tags, key_slot, partition_of
from sse_fast.hub import Hub, PublishError, PublishRequest
from sse_fast.settings import Settings
from sse_fast.testing import ServerProcess, wait_for

from ..conftest import forgive
from ..support.redis_cluster import RedisCluster
from .test_redis_shards import (
    Fleet,
    data,
    restart_in_turn_and_settle,
    scraped_for_both,
    started,
)
from .test_relay import Recording

# its own group: a cluster of its own, beside the other modules' (they hold a worker ~50 s)
pytestmark = [
    pytest.mark.xdist_group("redis_cluster_broker"),
    pytest.mark.processes("a real Redis Cluster: masters killed, slots moved"),
]

N = 128


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


@pytest.fixture
def healthy(cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The module's cluster, every node running and agreeing, emptied; restored after the
    test (a killed node started again, a frozen one thawed)."""
    _restore(cluster)
    for port in cluster.primaries():
        cluster.node(port).flushall()
    yield cluster
    _restore(cluster)


def _restore(cluster: RedisCluster) -> None:
    for port, process in cluster.processes.items():
        if process.poll() is not None:
            cluster.restart(port)
        else:
            cluster.thaw(port)


def node(url: str, **options: Any) -> Hub:
    options.setdefault("probe_interval", 0.5)
    options.setdefault("partitions", N)
    return Hub(Settings(), broker=RedisBroker(url, **options))


def master_of_topic(cluster: RedisCluster, topic: str) -> int:
    """The port of the master holding ``topic``'s partition now."""
    return cluster.master_of("{" + cluster_tags(N)[partition_of(topic, N)] + "}")


def topics_by_master(cluster: RedisCluster, count: int, prefix: str) -> dict[int, list[str]]:
    """``count`` topics ``<prefix><i>``, by the port of the master holding each."""
    out: dict[int, list[str]] = {}
    for i in range(count):
        out.setdefault(master_of_topic(cluster, f"{prefix}{i}"), []).append(f"{prefix}{i}")
    return out


def test_topics_on_every_master_arrive_in_order_once_on_two_nodes(healthy: RedisCluster) -> None:
    """300 topics over the three masters, 3 events each published from two nodes in batches
    that span every master, a stream per topic on each node and one stream over topics of
    three masters: every stream gets its events in order, once; each node holds one
    pub/sub connection per master (CLIENT LIST), never one per partition or topic."""
    topics = [f"topic-{i}" for i in range(300)]
    by_master = topics_by_master(healthy, 300, "topic-")
    assert len(by_master) == 3
    spread = [group[0] for group in by_master.values()]

    async def main() -> None:
        async with started(node(healthy.url), node(healthy.url)) as (a, b):
            on_a = {t: Recording() for t in topics}
            on_b = {t: Recording() for t in topics}
            await asyncio.gather(*(on_a[t].attach(a, [t]) for t in topics))
            await asyncio.gather(*(on_b[t].attach(b, [t]) for t in topics))
            over = Recording()
            await over.attach(b, spread)
            requests = [PublishRequest((t,), f"{t}:{k}") for k in range(3) for t in topics]
            for start in range(0, len(requests), 100):
                await (a if start % 200 else b).publish(requests[start : start + 100])

            def complete() -> bool:
                streams = (*on_a.values(), *on_b.values())
                return all(len(s.events()) >= 3 for s in streams) and len(over.events()) >= 9

            await wait_for(complete, timeout=30)
            for t in topics:
                assert data(on_a[t]) == data(on_b[t]) == [f"{t}:{k}" for k in range(3)]
            assert sorted(data(over)) == sorted(f"{t}:{k}" for t in spread for k in range(3))
            for t in spread:  # per topic, in order
                assert [d for d in data(over) if d.startswith(f"{t}:")] == [
                    f"{t}:{k}" for k in range(3)
                ]
            for port in healthy.primaries():
                clients = healthy.node(port).client_list(_type="pubsub")
                assert len(clients) == 2, clients  # one per node (a member each)

    asyncio.run(main())


def test_a_pattern_stream_over_every_master_resumes_on_another_node(
    healthy: RedisCluster,
) -> None:
    """A pattern stream on node A over topics of all three masters, and topics born on
    node B on every master while it is open (sharded births, ``SPUBLISH``): every event
    once, each partition's in order; node C resumes from the middle and gets the rest,
    topics born after the id included."""
    topics = [f"pat/{i}" for i in range(60)]
    assert len(topics_by_master(healthy, 60, "pat/")) == 3

    async def main() -> None:
        async with started(node(healthy.url), node(healthy.url), node(healthy.url)) as hubs:
            a, b, c = hubs
            await b.publish([PublishRequest((t,), "early") for t in topics[:10]])
            stream = Recording()
            await stream.attach(a, ["pat/*"])
            sent = [f"{t}:{k}" for k in range(2) for t in topics]
            for start in range(0, len(sent), 20):
                await b.publish(
                    [PublishRequest((d.split(":")[0],), d) for d in sent[start : start + 20]]
                )
            # one more event on every topic: each topic's are in order, so a repeat of one
            # of its events would come before its last
            ends = [f"{t}:end" for t in topics]
            for start in range(0, len(ends), 20):
                await b.publish(
                    [PublishRequest((d.split(":")[0],), d) for d in ends[start : start + 20]]
                )
            sent += ends
            await wait_for(lambda: set(ends) <= set(data(stream)), timeout=30)
            got = data(stream)
            assert sorted(got) == sorted(sent)
            for t in topics:
                assert [d for d in got if d.split(":")[0] == t] == [f"{t}:0", f"{t}:1", f"{t}:end"]
            middle = stream.events()[len(got) // 2][1]
            again = Recording()
            assert (await again.attach(c, ["pat/*"], middle)).resume == "resumed"
            assert sorted(data(again)) == sorted(got[len(got) // 2 + 1 :])

    asyncio.run(main())


def test_a_killed_master_refuses_its_topics_only_until_its_replica_takes_over(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of one master while topics of all three are published one by one: its
    topics answer 503 with Retry-After (never a 500, never a cluster error's words) until
    the replica is promoted and the node follows the new slot map; the other masters'
    topics are published every time; every acknowledged event reaches the streams, in
    order, once (its replica had it: WAIT confirms nothing here, so a lag would be said
    as sse-fast-missed redis-lost-writes instead)."""
    by_master = topics_by_master(healthy, 60, "k-")
    victim = sorted(by_master)[0]
    topics = [t for group in by_master.values() for t in group[:5]]
    held = sum(healthy.master_of("{" + tag + "}") == victim for tag in cluster_tags(N))

    async def main() -> None:
        async with started(node(healthy.url)) as (a,):
            streams = {t: Recording() for t in topics}
            await asyncio.gather(*(streams[t].attach(a, [t]) for t in topics))
            acked: dict[str, list[str]] = {t: [] for t in topics}
            refused: dict[str, list[PublishError]] = {t: [] for t in topics}

            async def round_() -> None:
                for t in topics:
                    try:
                        await a.publish([PublishRequest((t,), f"{t}:{len(acked[t])}")])
                    except PublishError as exc:
                        refused[t].append(exc)
                    else:
                        acked[t].append(f"{t}:{len(acked[t])}")

            await round_()
            await asyncio.to_thread(healthy.kill, victim)
            mine = by_master[victim][:5]
            down = 0

            async def recovered() -> bool:  # published round after round until then
                nonlocal down
                await round_()
                down = max(down, a.broker.partitions_down)
                return bool(refused[mine[0]]) and _recovered(acked, refused, mine)

            await wait_for(recovered, timeout=30, what="the killed master's topics published again")
            assert down == held  # the metric's figure: that master's partitions, no more
            for _ in range(3):
                await round_()

            def delivered() -> bool:
                return all(data(streams[t]) == acked[t] for t in topics)

            await wait_for(delivered, timeout=20)
            for t in topics:
                if t in mine:
                    assert refused[t], t
                    for exc in refused[t]:
                        assert exc.status == 503 and exc.retry_after, exc
                        assert not any(w in str(exc) for w in ("MOVED", "ASK ", "CROSSSLOT"))
                else:
                    assert refused[t] == [], refused[t][:1]
                assert [e for e in streams[t].events() if e[0]] == []  # no marker: nothing lost
            stats = a.broker.stats()["redis"]
            assert stats["cluster_map_moves"] >= 1 and stats["partitions_down"] == []
            assert a.broker.partitions_down == 0

    asyncio.run(main())
    forgive(caplog, "subscription lost", "does not answer")


def _recovered(
    acked: dict[str, list[str]], refused: dict[str, list[PublishError]], topics: list[str]
) -> bool:
    """Every topic of ``topics`` was published again after it was refused."""
    return all(refused[t] and len(acked[t]) > 1 for t in topics)


def test_writes_a_promoted_replica_never_got_are_said_on_their_partition_only(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A master's replica frozen (SIGSTOP) and its link cut while two events are published
    to one of its topics, the master killed, the replica thawed and promoted without them: the node
    finds the partition behind what it saw, and that topic's stream gets sse-fast-missed
    (redis-lost-writes, with the partition) after the two events; a resume from them is
    ``evicted`` (their ids now belong to nothing); a stream of a topic of the same master
    in another partition, and one of another master, get no marker."""
    by_master = topics_by_master(healthy, 200, "l-")
    victim, other = sorted(by_master)[:2]
    lossy = by_master[victim][0]
    calm = next(t for t in by_master[victim] if partition_of(t, N) != partition_of(lossy, N))
    away = by_master[other][0]
    (replica,) = healthy.replicas_of(victim)

    async def main() -> None:
        async with started(node(healthy.url)) as (a,):
            streams = {t: Recording() for t in (lossy, calm, away)}
            for t, stream in streams.items():
                await stream.attach(a, [t])
                await a.publish([PublishRequest((t,), f"{t}:0")])
            await wait_for(lambda: all(len(s.events()) == 1 for s in streams.values()))
            await wait_for(lambda: _in_sync(healthy, victim), timeout=10)
            healthy.freeze(replica)
            # its link cut by the master, so that what follows is not even in its socket
            await asyncio.to_thread(healthy.node(victim).client_kill_filter, _type="replica")
            try:
                lost = await a.publish([PublishRequest((lossy,), f"{lossy}:{k}") for k in (1, 2)])
                await wait_for(lambda: len(streams[lossy].events()) == 3)
                await asyncio.to_thread(healthy.kill, victim)
            finally:
                healthy.thaw(replica)
            key = "{" + cluster_tags(N)[partition_of(lossy, N)] + "}"
            await asyncio.to_thread(healthy.wait_failover, key, victim)
            await wait_for(lambda: len(streams[lossy].events()) == 4, timeout=15)
            marker = streams[lossy].events()[3]
            assert marker[0] == "sse-fast-missed"
            said = orjson.loads(marker[2])
            assert said["reason"] == "redis-lost-writes"
            assert said["partition"] == partition_of(lossy, N)
            late = Recording()
            assert (await late.attach(a, [lossy], lost[0])).resume == "evicted"
            (after,) = await a.publish([PublishRequest((lossy,), f"{lossy}:3")])
            await wait_for(lambda: streams[lossy].events()[-1][1] == after)
            for t in (calm, away):
                assert [e[0] for e in streams[t].events()] == [None], t

    asyncio.run(main())
    forgive(caplog, "subscription lost", "does not answer", "is behind events")


def test_a_partition_moved_to_another_master_is_followed_with_nothing_lost(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Resharding: one partition's slot moved (with its keys) to another master under a
    subscribed node. Its old master pushes sunsubscribe; the node reads the map again,
    subscribes on the new master and resyncs: events published after the move (refused
    with 503 and Retry-After at most while it is under way) arrive, in order, once, with no
    sse-fast-missed, and a resume from before the move is ``resumed``; the other
    partitions' streams go on untouched. A pattern stream open through the move gets a
    topic born afterwards in the moved partition (its births are told on the new master)."""
    by_master = topics_by_master(healthy, 60, "m-")
    source, target = sorted(by_master)[:2]
    tags = cluster_tags(N)
    # the source's first partition: its connection's probes go on that partition's slot too
    first_there = min(p for p in range(N) if healthy.master_of("{" + tags[p] + "}") == source)
    moving = next(t for t in (f"m-{i}" for i in range(10_000)) if partition_of(t, N) == first_there)
    staying = next(t for t in by_master[source] if partition_of(t, N) != first_there)
    slot = key_slot("{" + tags[first_there] + "}")
    born = next(
        t for t in (f"born/{i}" for i in range(10_000)) if partition_of(t, N) == first_there
    )

    async def main() -> None:
        async with started(node(healthy.url)) as (a,):
            streams = {t: Recording() for t in (moving, staying)}
            for t, stream in streams.items():
                await stream.attach(a, [t])
            pattern = Recording()
            await pattern.attach(a, ["born/*"])
            (first,) = await a.publish([PublishRequest((moving,), "before")])
            await a.publish([PublishRequest((staying,), "before")])
            await wait_for(lambda: all(len(s.events()) == 1 for s in streams.values()))
            await asyncio.to_thread(healthy.move_slot, slot, target)

            async def taken() -> bool:  # refused (503) at most until the node follows the move
                try:
                    await a.publish([PublishRequest((moving,), "after")])
                except PublishError as exc:
                    assert exc.status == 503 and exc.retry_after, exc
                    return False
                return True

            await wait_for(taken, timeout=10, interval=0.05, what="a publish taken after the move")
            await a.publish([PublishRequest((staying,), "after")])
            await a.publish([PublishRequest((born,), "born after the move")])
            await wait_for(lambda: all(len(s.events()) == 2 for s in streams.values()), timeout=10)
            await wait_for(lambda: len(pattern.events()) == 1, timeout=10)
            assert [e[2] for e in pattern.events()] == ["born after the move"]
            for stream in streams.values():
                assert [e[2] for e in stream.events()] == ["before", "after"]
            late = Recording()
            assert (await late.attach(a, [moving], first)).resume == "resumed"
            await wait_for(lambda: len(late.events()) == 1)
            assert a.broker.stats()["redis"]["cluster_map_moves"] >= 1
            assert a.broker.placement.shard_of(partition_of(moving, N)) != (
                a.broker.placement.shard_of(partition_of(staying, N))
            )
            # an operator's resharding is no failure: said as the map's move, a warning
            assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text

    asyncio.run(main())


def test_a_master_lost_with_its_replica_comes_back_empty_with_a_break_there_only(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A master and its replica both killed (cluster-require-full-coverage no): its topics
    answer 503 with Retry-After while the other masters' are published; started again
    without their data (no persistence), its partitions' streams get sse-fast-missed
    (redis-restarted, with the partition) and then what is published since; the other
    masters' streams get no marker."""
    by_master = topics_by_master(healthy, 60, "g-")
    victim, other = sorted(by_master)[:2]
    gone, kept = by_master[victim][0], by_master[other][0]
    (replica,) = healthy.replicas_of(victim)

    async def main() -> None:
        async with started(node(healthy.url)) as (a,):
            streams = {t: Recording() for t in (gone, kept)}
            for t, stream in streams.items():
                await stream.attach(a, [t])
                await a.publish([PublishRequest((t,), "before")])
            await wait_for(lambda: all(len(s.events()) == 1 for s in streams.values()))
            await asyncio.to_thread(healthy.kill, replica)
            await asyncio.to_thread(healthy.kill, victim)

            async def refused() -> PublishError | None:  # once the node knows (at once, or soon)
                try:
                    await a.publish([PublishRequest((gone,), "lost")])
                except PublishError as exc:
                    return exc
                return None

            refusal = await wait_for(refused, timeout=10, interval=0.05, what="a publish refused")
            assert refusal.status == 503 and refusal.retry_after
            await a.publish([PublishRequest((kept,), "meanwhile")])
            await asyncio.to_thread(healthy.restart, victim)
            await asyncio.to_thread(healthy.restart, replica)

            async def taken() -> bool:
                try:
                    await a.publish([PublishRequest((gone,), "after")])
                except PublishError as exc:
                    assert exc.status == 503, exc
                    return False
                return True

            await wait_for(taken, timeout=15, interval=0.1, what="a publish taken once it is back")
            await wait_for(lambda: len(streams[gone].events()) >= 3, timeout=10)
            marker = streams[gone].events()[1]
            assert marker[0] == "sse-fast-missed"
            said = orjson.loads(marker[2])
            assert said["reason"] == "redis-restarted"
            assert said["partition"] == partition_of(gone, N)
            assert [e[2] for e in streams[gone].events()][::2] == ["before", "after"]
            assert [e for e in streams[kept].events() if e[0]] == []
            assert [e[2] for e in streams[kept].events()] == ["before", "meanwhile"]

    asyncio.run(main())
    forgive(caplog, "subscription lost", "does not answer")


def test_a_node_started_during_a_failover_starts_once_the_map_names_the_new_master(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A node started right after a master was killed: its start waits for the masters that
    carry partitions, follows the failover (the dead master's connection carries nothing
    then), and is done well within its 10 s limit; every master's topics are published and
    delivered afterwards."""
    by_master = topics_by_master(healthy, 60, "f-")
    victim = sorted(by_master)[0]
    topics = [group[0] for group in by_master.values()]

    async def main() -> None:
        await asyncio.to_thread(healthy.kill, victim)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with started(node(healthy.url)) as (a,):
            took = loop.time() - began
            assert took < 8, f"{took:.1f} s"
            stream = Recording()

            async def attached() -> bool:  # the map may still have been moving at the start
                try:
                    await stream.attach(a, topics)
                except PublishError:
                    return False
                return True

            await wait_for(attached, timeout=10, interval=0.1, what="the stream attached")
            for t in topics:

                async def taken(t: str = t) -> bool:
                    try:
                        await a.publish([PublishRequest((t,), t)])
                    except PublishError as exc:
                        assert exc.status == 503, exc
                        return False
                    return True

                await wait_for(taken, timeout=10, interval=0.1, what=f"a publish to {t} taken")
            await wait_for(lambda: len(stream.events()) == 3, timeout=10)

    asyncio.run(main())
    forgive(caplog, "subscription lost", "does not answer")


def test_a_master_that_fails_back_gets_its_partitions_and_connection_back(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A master killed, its replica promoted (the node moves its partitions there and stops
    the old connection), then the old master started again and made master once more
    (CLUSTER FAILOVER on it): the node moves the partitions back onto the old connection,
    started again with a new client, and that master's topic is published and delivered,
    nothing lost; its scripts are registered on the new client, not the closed one."""
    by_master = topics_by_master(healthy, 60, "b-")
    victim = sorted(by_master)[0]
    topic = by_master[victim][0]
    key = "{" + cluster_tags(N)[partition_of(topic, N)] + "}"

    async def publish_until_taken(a: Hub, data: str) -> None:
        async def taken() -> bool:
            try:
                await a.publish([PublishRequest((topic,), data)])
            except PublishError as exc:
                assert exc.status == 503, exc
                return False
            return True

        await wait_for(taken, timeout=15, interval=0.1, what=f"{data!r} published")

    async def main() -> None:
        async with started(node(healthy.url)) as (a,):
            stream = Recording()
            await stream.attach(a, [topic])
            await a.publish([PublishRequest((topic,), "first")])
            await wait_for(lambda: _in_sync(healthy, victim), timeout=10)
            await asyncio.to_thread(healthy.kill, victim)
            await asyncio.to_thread(healthy.wait_failover, key, victim)
            await publish_until_taken(a, "second")
            await asyncio.to_thread(healthy.restart, victim)
            await wait_for(lambda: _in_sync(healthy, healthy.master_of(key)), timeout=10)
            for _ in range(4):  # a manual failover that timed out (a busy machine)
                healthy.node(victim).execute_command("CLUSTER", "FAILOVER", "FORCE")
                with contextlib.suppress(TimeoutError):
                    await wait_for(lambda: healthy.agreed() and healthy.master_of(key) == victim, 5)
                    break
            assert healthy.master_of(key) == victim, "the old master never took over again"
            await publish_until_taken(a, "third")
            await wait_for(lambda: len(stream.events()) == 3, timeout=10)
            assert [e[2] for e in stream.events()] == ["first", "second", "third"]

            def carrying() -> list[Connection]:
                return [c for c in a.broker.feed.connections if c.partitions]

            back_home = f"127.0.0.1:{victim}"
            await wait_for(lambda: back_home in [c.url for c in carrying()], timeout=10)
            await publish_until_taken(a, "fourth")
            await wait_for(lambda: len(stream.events()) == 4, timeout=10)
            assert [e[2] for e in stream.events()][3:] == ["fourth"]
            assert len(carrying()) == 3 and len(a.broker.feed.connections) == 4
            back = next(c for c in carrying() if c.url == back_home)
            # its scripts are the new client's: one bound to the first, closed client would
            # open that client's pool again, never to be closed
            assert back.scripts and all(
                script.registered_client is back.client for script in back.scripts.values()
            )

    asyncio.run(main())
    forgive(caplog, "subscription lost", "does not answer")


def test_waiting_for_a_replica_is_confirmed_on_the_partitions_own_master(
    healthy: RedisCluster,
) -> None:
    """``wait_replicas=1`` with the replica of one master frozen (SIGSTOP): a publish to that
    master's topic answers 503 (WAIT sent beside the script, on that master's connection,
    counts 0 replicas); one to another master's topic answers 200. A WAIT sent to another
    connection would count that master's replica and answer 200."""
    by_master = topics_by_master(healthy, 60, "w-")
    frozen_master, other = sorted(by_master)[:2]
    (replica,) = healthy.replicas_of(frozen_master)

    async def main() -> None:
        async with started(node(healthy.url, wait_replicas=1)) as (a,):
            await a.publish([PublishRequest((by_master[frozen_master][0],), "before")])
            healthy.freeze(replica)
            try:
                with pytest.raises(PublishError) as refused:
                    await a.publish([PublishRequest((by_master[frozen_master][0],), "x")])
                assert refused.value.status == 503
                assert "0 of 1 replicas" in str(refused.value)
                await a.publish([PublishRequest((by_master[other][0],), "y")])
            finally:
                healthy.thaw(replica)

    asyncio.run(main())


def test_presence_lives_on_the_master_of_the_topics_partition(healthy: RedisCluster) -> None:
    """A topic's presence hash is its partition's tagged key, written on and read from the
    master owning that slot (a plain command there: no MOVED)."""
    rooms = [group[0] for group in topics_by_master(healthy, 60, "room-").values()]

    async def main() -> None:
        async with started(node(healthy.url)) as (a,):
            figures = {room: {"subscribers": 1, "subjects": {"u": 1}} for room in rooms}
            await a.broker.store_presence(figures)
            for room in rooms:
                key = a.broker.placement.presence(room)
                assert healthy.node(master_of_topic(healthy, room)).exists(key) == 1
                (figure,) = await a.broker.read_presence(room) or []
                assert figure["subscribers"] == 1

    asyncio.run(main())


def test_a_node_of_two_workers_on_the_cluster_answers_one_scrape_for_both(
    healthy: RedisCluster,
) -> None:
    """Gathers go over the node's channel (SPUBLISH on partition 0's master): /metrics and
    /stats of a node with two workers count both, and /stats names the three masters, none
    down."""
    with serve(healthy.url, 0, "--workers", "2") as server:

        async def main() -> None:
            redis = await scraped_for_both(server)
            assert redis["partitions"] == N and len(redis["cluster_masters"]) == 3
            assert redis["cluster_masters_down"] == [] and redis["partitions_down"] == []

        asyncio.run(main())


def test_a_node_configured_with_another_layout_is_refused(healthy: RedisCluster) -> None:
    """The first node records the Cluster's layout (kind cluster, 128 partitions); a node
    configured for 64 partitions is refused with the sentence; a cluster node given as
    redis:// is refused with the URL to give."""
    for port in healthy.ports:  # no record from an earlier test
        with contextlib.suppress(Exception):
            healthy.node(port).delete("sse:layout")

    async def main() -> None:
        assert await check_layout([healthy.url], N) is None
        assert await check_layout([healthy.url], N) is None  # the same, again
        refusal = await check_layout([healthy.url], 64)
        assert refusal is not None
        assert "is part of layout" in refusal and "a Cluster, 128 partitions" in refusal
        assert "configured for a Cluster, 64 partitions" in refusal
        plain = await check_layout([f"redis://127.0.0.1:{healthy.ports[0]}"], 1)
        assert plain is not None and "give the Cluster as redis-cluster://" in plain

    asyncio.run(main())


# ---------------------------------------------------------------- two serve processes


def serve(url: str, port: int = 0, *flags: str) -> ServerProcess:
    return ServerProcess("--redis-url", url, "--redis-probe-interval", "0.5", *flags, port=port)


def _in_sync(cluster: RedisCluster, master: int) -> bool:
    """Every replica of ``master`` has everything it wrote (replication offsets equal)."""
    offset = cluster.node(master).info("replication")["master_repl_offset"]
    return all(
        cluster.node(r).info("replication").get("slave_repl_offset") == offset
        for r in cluster.replicas_of(master)
    )


def _fleet_under_faults(cluster: RedisCluster, count: int) -> None:
    topics = [f"topic-{i}" for i in range(count)]
    masters = sorted(topics_by_master(cluster, count, "topic-"))
    group = {t: masters.index(master_of_topic(cluster, t)) for t in topics}
    nodes = [serve(cluster.url), serve(cluster.url)]
    with contextlib.ExitStack() as stack:
        for server in nodes:
            stack.enter_context(server)
        asyncio.run(_fleet_main(cluster, masters, group, nodes, stack))


async def _fleet_main(
    cluster: RedisCluster,
    masters: list[int],
    group: dict[str, int],
    nodes: list[ServerProcess],
    stack: contextlib.ExitStack,
) -> None:
    groups = {k: [t for t in group if group[t] == k] for k in range(3)}
    fleet = Fleet(groups, nodes, group.__getitem__)
    load, watchers, delivered = fleet.load, fleet.watchers, fleet.delivered
    try:
        await fleet.start()

        # the first master killed (kill -9) while the others are published to; what it
        # acknowledged reached its replica first (else its loss is said: another test)
        await load.pause(0)
        await wait_for(lambda: delivered(0), timeout=30)
        await wait_for(lambda: _in_sync(cluster, masters[0]), timeout=10)
        await asyncio.to_thread(cluster.kill, masters[0])
        before = {k: len(load.answers[k]) for k in range(3)}
        load.paused.discard(0)
        await wait_for(lambda: len(load.answers[0]) - before[0] >= 20, timeout=30)
        key = "{" + cluster_tags(N)[partition_of(groups[0][0], N)] + "}"
        await asyncio.to_thread(cluster.wait_failover, key, masters[0])
        back = len(load.answers[0])
        await wait_for(lambda: sum(s == 200 for s, _ in load.answers[0][back:]) >= 50, timeout=30)
        refused = [(s, r) for s, r in load.answers[0][before[0] :] if s != 200]
        assert refused and all(s == 503 and r for s, r in refused), refused[:5]
        for body in load.refusals[0]:
            assert not any(w in body for w in (b"MOVED", b"ASK ", b"CROSSSLOT", b"CLUSTERDOWN"))
        for node in nodes:
            assert (await node.get("/readyz"))[0] == 200  # the other masters are up
        await restart_in_turn_and_settle(
            nodes, lambda port: serve(cluster.url, port), fleet, stack, 500
        )
    finally:
        await fleet.stop()
    for k in (1, 2):
        assert load.answers[k] and all(s == 200 for s, _ in load.answers[k])
    assert all(w.connects >= 2 for _, w in watchers)  # each resumed after its node restarted
    assert all(w.missed == [] for _, w in watchers)  # nothing was lost: nothing to say


def test_two_nodes_survive_a_master_killed_and_each_node_restarted(
    healthy: RedisCluster,
) -> None:
    """Two ``sse-fast serve`` nodes on the Cluster (128 partitions), 1,000 topics published
    through both, streams of each master's topics on both (16 topics each): the first
    master SIGKILLed under load answers 503 with Retry-After for its topics (no cluster
    error's words) until its replica takes over, while the others answer 200 every time
    and both nodes stay ready; then each node is restarted in turn and its streams resume
    with Last-Event-ID: every topic's acknowledged events arrive on every stream in order,
    once, with no sse-fast-missed (nothing was lost)."""
    _fleet_under_faults(healthy, 1000)


@pytest.mark.slow
def test_ten_thousand_topics_on_the_cluster_survive_the_same_faults(
    healthy: RedisCluster,
) -> None:
    """The same with 10,000 topics."""
    _fleet_under_faults(healthy, 10_000)


def test_the_start_says_when_one_lost_master_would_stop_every_topic(
    healthy: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The layout check warns when the Cluster has cluster-require-full-coverage yes (one
    master lost with its replicas stops every slot), and says it could not check when
    CONFIG is refused (a user without it, as managed offerings give); with no, nothing."""

    def on_every_node(*command: object) -> None:
        for port in healthy.live_ports():
            healthy.node(port).execute_command(*command)  # type: ignore[no-untyped-call]

    limited = healthy.url.replace("redis-cluster://", "redis-cluster://limited:pw@")
    try:
        assert asyncio.run(check_layout([healthy.url], N)) is None
        assert "cluster-require-full-coverage" not in caplog.text
        on_every_node("CONFIG", "SET", "cluster-require-full-coverage", "yes")
        assert asyncio.run(check_layout([healthy.url], N)) is None
        assert "has cluster-require-full-coverage yes" in caplog.text
        on_every_node("ACL", "SETUSER", "limited", "on", ">pw", "+@all", "-config", "~*", "&*")
        caplog.clear()
        assert asyncio.run(check_layout([limited], N)) is None
        assert "refused CONFIG GET cluster-require-full-coverage" in caplog.text
    finally:
        on_every_node("CONFIG", "SET", "cluster-require-full-coverage", "no")
        on_every_node("ACL", "DELUSER", "limited")


def test_publishing_straight_into_the_cluster_takes_a_cluster_client(
    healthy: RedisCluster,
) -> None:
    """``sse_fast.brokers.redis.publish`` on a Cluster fleet: with a ``RedisCluster`` client each
    partition's call goes to its master (SPUBLISH there) and a node delivers it; an event over
    topics of two masters once, under one id; a plain client is refused with what to give."""
    import redis.asyncio as aioredis

    from sse_fast.brokers.redis import publish

    by_master = topics_by_master(healthy, 60, "d-")
    one, two = (group[0] for group in list(by_master.values())[:2])

    async def main() -> None:
        assert await check_layout([healthy.url], N) is None  # records the Cluster's layout
        client = aioredis.RedisCluster(host="127.0.0.1", port=healthy.ports[0])
        plain = aioredis.Redis(host="127.0.0.1", port=healthy.ports[0])
        try:
            async with started(node(healthy.url)) as (a,):
                stream = Recording()
                await stream.attach(a, [one, two])
                await publish(client, one, "one")
                both = await publish(client, [one, two], "both")
                await wait_for(lambda: len(stream.events()) == 2)
                assert [e[2] for e in stream.events()] == ["one", "both"]
                assert both.startswith("x")  # one id in both partitions
                with pytest.raises(PublishError, match=r"give publish\(\) a redis.asyncio"):
                    await publish(plain, one, "no")
        finally:
            await client.aclose()
            await plain.aclose()

    asyncio.run(main())


def test_a_cluster_speaking_only_tls_is_used_with_its_ca(tmp_path: Path) -> None:
    """A Cluster whose nodes speak TLS only (clients, bus, replication): given as
    ``rediss-cluster://...?ssl_ca_certs=<its CA>``, a node publishes to and receives topics
    of every master; without the CA, the start fails saying the certificate could not be
    verified, on every seed tried."""
    from ..support.certificates import self_signed

    cert, key = self_signed(tmp_path)
    with RedisCluster(tls=(str(cert), str(key))) as tls:
        topics = [group[0] for group in topics_by_master(tls, 60, "t-").values()]
        assert len(topics) == 3 and tls.url.startswith("rediss-cluster://")

        async def main() -> None:
            # probes at the default pace: this test is not about them, and on a busy
            # machine a TLS round trip can take longer than the suite's 1 s staleness
            async with started(node(tls.url, probe_interval=5.0)) as (a,):
                stream = Recording()
                await stream.attach(a, topics)
                for t in topics:
                    await a.publish([PublishRequest((t,), t)])
                await wait_for(lambda: len(stream.events()) == 3)
                assert sorted(e[2] for e in stream.events()) == sorted(topics)
            unverified = node(tls.url.partition("?")[0])
            with pytest.raises(ConnectionError, match="certificate verify failed") as refused:
                await unverified.start()
            assert "cannot use the Redis Cluster at rediss-cluster://" in str(refused.value)

        asyncio.run(main())
