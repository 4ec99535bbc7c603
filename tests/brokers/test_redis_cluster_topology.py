"""The Cluster topology (``sse_fast/brokers/redis/_cluster.py``) against a real Redis
Cluster of 3 masters and 3 replicas: the URL's refusals, the slot map read from any
node that answers, each partition's master, a master killed and its partitions found
on the replica that took over, every node gone said with the nodes tried."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from sse_fast.brokers.redis._cluster import (
    ClusterURL,
    Topology,
    parse_cluster_url,
    version_refusal,
)
from sse_fast.brokers.redis._partitions import cluster_tags
from sse_fast.brokers.redis._placement import Placement
from sse_fast.testing import free_port, wait_for

from ..support.redis_cluster import RedisCluster

ON_CLUSTER = pytest.mark.xdist_group("redis_cluster")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


def test_a_cluster_url_names_its_seeds() -> None:
    assert parse_cluster_url("redis-cluster://a:1,b:2") == ClusterURL((("a", 1), ("b", 2)))
    tls = parse_cluster_url("rediss-cluster://u:p%40ss@[::1]:7000/0")
    assert tls == ClusterURL((("::1", 7000),), True, "u", "p@ss")
    assert parse_cluster_url("redis-cluster://:secret@a:1").password == "secret"
    files = parse_cluster_url("rediss-cluster://a:1/?ssl_ca_certs=/x/ca.pem&ssl_cert_reqs=none")
    assert files.tls_options == (("ssl_ca_certs", "/x/ca.pem"), ("ssl_cert_reqs", "none"))


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://a:1", "starts with redis-cluster://"),
        ("redis-cluster://a:1/2", "only database 0"),
        ("redis-cluster://a", "is not host:port"),
        ("redis-cluster://a:1,b:x", "seed 'b:x' is not host:port"),
        ("redis-cluster://a:99999", "is not host:port"),
        ("redis-cluster://a:1?ssl=1", "options in the URL are not read without TLS"),
        ("rediss-cluster://a:1?ssl=1", "option 'ssl' is not read; a Cluster URL takes"),
        ("rediss-cluster://a:1?ssl_cert_reqs=maybe", "give one of none, optional, required"),
        ("rediss-cluster://a:1?ssl_ca_certs=", "ssl_ca_certs is empty"),
    ],
)
def test_a_wrong_cluster_url_says_what_to_give(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=r"host:6379,host2:6379|give|takes|leave") as e:
        parse_cluster_url(url)
    assert said in str(e.value)


@ON_CLUSTER
@pytest.mark.processes("a real Redis Cluster's topology")
def test_the_map_is_read_from_a_seed_that_answers(cluster: RedisCluster) -> None:
    """The first seed is dead (nothing listens there): the map comes from the next one,
    and every partition's master is the one Redis says owns its tag's slot."""
    dead = ("127.0.0.1", free_port())
    seeds = (dead, *cluster.seeds[1:])

    async def main() -> None:
        topology = Topology(ClusterURL(seeds), 128)
        try:
            moved = await topology.refresh()
            assert moved == list(range(128))  # from nothing to every partition
            assert len(topology.masters) == 3
            assert sorted(Counter(map(topology.master_of, range(128))).values()) == [42, 43, 43]
            for p, tag in enumerate(cluster_tags(128)):
                assert topology.master_of(p) == ("127.0.0.1", cluster.master_of("{" + tag + "}"))
            assert sorted(len(topology.partitions_of(m)) for m in topology.masters) == [42, 43, 43]
            assert await topology.refresh() == []  # nothing moved
            versions = await topology.versions()
            assert len(versions) == 3 and all(int(v.split(".")[0]) >= 7 for v in versions.values())
            assert await topology.uncovered_stops_all() is False  # the harness sets "no"
            assert version_refusal(versions) is None  # 7.0 or newer everywhere
        finally:
            await topology.close()

    asyncio.run(main())


@ON_CLUSTER
def test_nothing_answering_names_every_node_tried() -> None:
    seeds = (("127.0.0.1", free_port()), ("127.0.0.1", free_port()))

    async def main() -> None:
        topology = Topology(ClusterURL(seeds), 16)
        try:
            with pytest.raises(ConnectionError, match="no node of the Redis Cluster") as e:
                await topology.refresh(timeout=1.0)
            assert all(f"127.0.0.1:{port}" in str(e.value) for _, port in seeds)
        finally:
            await topology.close()

    asyncio.run(main())


@ON_CLUSTER
@pytest.mark.processes("a real Redis Cluster's topology")
def test_a_killed_masters_partitions_are_found_on_its_replica(cluster: RedisCluster) -> None:
    tag = "{" + cluster_tags(128)[0] + "}"

    async def main() -> None:
        async with _watching(cluster) as topology:
            victim = topology.master_of(0)
            assert victim is not None
            owned = topology.partitions_of(victim)
            dead, moved = await _fail_over(cluster, topology, tag)
            assert dead == victim[1]
            assert moved == owned  # the dead master asked first: the next one answered
            assert topology.master_of(0) not in (None, victim) and victim not in topology.masters
            assert topology.partitions_of(topology.master_of(0) or victim) == owned
            reply = await topology.client(topology.master_of(0) or victim).set(tag + ":k", "v")
            assert reply is True  # a write on the new owner, without MOVED

    asyncio.run(main())


@ON_CLUSTER
@pytest.mark.processes("a real Redis Cluster's topology")
def test_the_owner_table_keeps_unmoved_partitions_on_their_connection(
    cluster: RedisCluster,
) -> None:
    """Each partition's connection index names its master; after a failover only the dead
    master's partitions go to a new index, the others keep theirs, and a Placement given
    the table answers the same."""
    tag = "{" + cluster_tags(128)[0] + "}"

    async def main() -> None:
        async with _watching(cluster) as topology:
            indexes: dict[tuple[str, int], int] = {}
            before = topology.owner_table(indexes)
            assert sorted(indexes.values()) == [0, 1, 2] and set(before) == {0, 1, 2}
            by_index = {i: a for a, i in indexes.items()}
            assert all(by_index[before[p]] == topology.master_of(p) for p in range(128))
            placement = Placement("sse:", 128, 3, owners=before)
            assert [placement.shard_of(p) for p in range(128)] == before
            assert before != [p % 3 for p in range(128)]  # the slot map, not the modulo
            victim = topology.master_of(0)
            assert victim is not None
            _, moved = await _fail_over(cluster, topology, tag)
            after = topology.owner_table(indexes, before)
            assert sorted(indexes.values()) == [0, 1, 2, 3]  # the promoted replica: index 3
            assert [p for p in range(128) if after[p] != before[p]] == moved
            assert {after[p] for p in moved} == {3} and indexes[victim] == before[0]
            promoted = next(a for a, i in indexes.items() if i == 3)
            assert topology.master_of(0) == promoted and promoted != victim

    asyncio.run(main())


@contextlib.asynccontextmanager
async def _watching(cluster: RedisCluster) -> AsyncIterator[Topology]:
    """A topology of ``cluster`` (128 partitions), read; closed after, and any node killed
    meanwhile started again."""
    topology = Topology(ClusterURL(tuple(cluster.seeds)), 128)
    try:
        await topology.refresh()
        yield topology
    finally:
        await topology.close()
        for port, process in cluster.processes.items():
            if process.poll() is not None:
                await asyncio.to_thread(cluster.restart, port)


async def _fail_over(cluster: RedisCluster, topology: Topology, tag: str) -> tuple[int, list[int]]:
    """The master of ``tag`` killed, its replica promoted: its port, and the partitions
    ``topology`` then finds moved."""
    dead = cluster.kill_master(tag)
    await asyncio.to_thread(cluster.wait_failover, tag, dead)
    return dead, await _moved(topology)


async def _moved(topology: Topology) -> list[int]:
    """The partitions a refresh finds moved after a failover, asking again every 50 ms for
    10 s: a node may answer the old map a moment after the harness's wait (1 run in 5)."""
    moved: list[int] = await wait_for(
        topology.refresh, timeout=10, interval=0.05, what="the map to move"
    )
    return moved


def test_an_uncovered_slot_at_start_says_which_and_what_to_do() -> None:
    topology = Topology("redis-cluster://127.0.0.1:1", 8)  # never refreshed: no slot served
    with pytest.raises(ConnectionError, match=r"slot \d+ \(partition 0's\) has no master"):
        topology.owner_table({})
    assert topology.owner_table({}, previous=[1] * 8) == [1] * 8


def test_a_master_older_than_7_is_refused_with_what_to_do() -> None:
    said = version_refusal({("a", 1): "7.2.4", ("b", 2): "6.2.14", ("c", 3): "?"})
    assert said is not None
    assert "b:2 runs '6.2.14'" in said and "c:3 runs '?'" in said and "a:1" not in said
    assert "7.0 or newer" in said and "upgrade them" in said
    assert version_refusal({("a", 1): "7.0.0", ("b", 2): "10.1"}) is None
