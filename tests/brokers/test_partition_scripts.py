"""The partition scripts (``publish_partition.lua``, ``read_partition.lua``,
``advance_partition.lua`` and their arguments in ``sse_fast/brokers/redis/_scripts.py``)
against a real Redis Cluster of 3 masters and 3 replicas and a plain Redis: every key
declared, no CROSSSLOT on any of 128 partitions, SPUBLISH on the topic's slot, positions
per partition, the retry memory per partition, a new dataset's floor, the floor raised,
and refusals of malformed arguments with a sentence. Real processes: the Lua scripts run
by real Redis servers and a Redis Cluster."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import ResponseError

from sse_fast.brokers.redis._partitions import cluster_tags, partition_keys, partition_of
from sse_fast.brokers.redis._scripts import (
    PARTITION_ADVANCE_SCRIPT,
    PARTITION_PUBLISH_SCRIPT,
    PARTITION_READ_SCRIPT,
    partition_publish_args,
    spanning_ids,
    split_by_partition,
)
from sse_fast.publishing import PublishError, PublishRequest
from sse_fast.testing import RedisServer

from ..support.redis_cluster import RedisCluster

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")

ON_CLUSTER = pytest.mark.xdist_group("redis_cluster")
N = 128
TAGS = cluster_tags(N)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


@pytest.fixture
def client(cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    c = redis.RedisCluster(startup_nodes=cluster.startup_nodes(), socket_timeout=2)
    try:
        yield c
    finally:
        c.close()


def publish(
    client: redis.RedisCluster | redis.Redis,
    requests: list[PublishRequest],
    prefix: str = "sse:",
    command: str = "SPUBLISH",
) -> list[str]:
    """A batch, as the broker sends it: ids for spanning events, one script per partition;
    the ids in the batch's order."""
    requests = spanning_ids(requests, N)
    ids: list[str] = [""] * len(requests)
    for partition, share in split_by_partition(requests, N).items():
        keys = partition_keys(prefix, TAGS[partition])
        declared, args = partition_publish_args(keys, [r for _, r in share], 1000, 3600.0, command)
        got = client.eval(PARTITION_PUBLISH_SCRIPT, len(declared), *declared, *args)
        for (index, _), event_id in zip(share, got, strict=True):
            assert ids[index] in ("", event_id.decode())  # a spanning event: one id everywhere
            ids[index] = event_id.decode()
    return ids


def read(client: Any, topics: list[str], since: dict[str, str] | None = None) -> list[Any]:
    """PARTITION_READ_SCRIPT on the partition of ``topics`` (all of one partition)."""
    (partition,) = {partition_of(t, N) for t in topics}
    keys = partition_keys("sse:", TAGS[partition])
    declared = [*keys.sequence, *(keys.stream(t) for t in topics)]
    froms = [(since or {}).get(t, "") for t in topics]
    reply: list[Any] = client.eval(
        PARTITION_READ_SCRIPT, len(declared), *declared, 100, os.urandom(8).hex(), *froms
    )
    return reply


def topics_of(partition: int, count: int, start: int = 0, prefix: str = "t") -> list[str]:
    """``count`` topics ``<prefix><i>`` (i from ``start``) of ``partition``."""
    found, i = [], start
    while len(found) < count:
        if partition_of(f"{prefix}{i}", N) == partition:
            found.append(f"{prefix}{i}")
        i += 1
    return found


@ON_CLUSTER
@pytest.mark.processes("the Lua scripts run by real Redis servers and a Redis Cluster")
def test_every_partition_publishes_and_reads_without_crossslot(
    client: redis.RedisCluster,
) -> None:
    """Two topics in each of the 128 partitions, two events each, in one batch: one script per
    partition (CROSSSLOT would raise), positions increasing within each partition, each topic's
    stream holding its events, read back by the read script."""
    topics = [t for p in range(N) for t in topics_of(p, 2, prefix="orders-")]
    requests = [PublishRequest((t,), {"n": k}) for k in range(2) for t in topics]
    ids = publish(client, requests)
    assert len(set(ids)) == len(ids)
    by_partition: dict[int, list[int]] = {}
    for request, event_id in zip(requests, ids, strict=True):
        by_partition.setdefault(partition_of(request.topics[0], N), []).append(int(event_id))
    assert len(by_partition) == N
    for positions in by_partition.values():
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
    for topic in topics[:40]:
        reply = read(client, [topic])
        position, _, epoch, floor = reply[:4]
        deleted, length, entries = reply[4:7]
        assert epoch and int(floor) < int(position) and length == 2 and deleted == b"0"
        frames = [dict(zip(e[1][::2], e[1][1::2], strict=True))[b"f"] for e in entries]
        assert frames[0].startswith(b"id: ") and b'data: {"n":1}\n\n' in frames[0]


@ON_CLUSTER
@pytest.mark.processes("the Lua scripts run by real Redis servers and a Redis Cluster")
def test_the_topics_channel_gets_the_message_by_sharded_pubsub(
    cluster: RedisCluster, client: redis.RedisCluster
) -> None:
    topic = "alerts"
    keys = partition_keys("sse:", TAGS[partition_of(topic, N)])
    owner = cluster.node(cluster.master_of(keys.position))
    pubsub = owner.pubsub()
    try:
        pubsub.ssubscribe(keys.channel(topic))
        deadline = time.monotonic() + 5
        while pubsub.get_sharded_message(timeout=0.1) is None:  # the confirmation
            assert time.monotonic() < deadline
        (event_id,) = publish(client, [PublishRequest((topic,), "hello", "note", "a-1")])
        message = None
        while message is None:
            assert time.monotonic() < deadline, "nothing on the topic's sharded channel"
            message = pubsub.get_sharded_message(timeout=0.1)
        head, _, frame = message["data"].partition(b"\n")
        position, wall, sent_id = head.split(b" ")
        assert event_id == "a-1" and sent_id == b"a-1" and int(position) > 0 and int(wall) > 0
        assert frame == b"id: a-1\nevent: note\ndata: hello\n\n"
    finally:
        pubsub.close()
        owner.close()


@ON_CLUSTER
@pytest.mark.processes("the Lua scripts run by real Redis servers and a Redis Cluster")
def test_an_id_is_published_once_per_partition_within_the_retry_window(
    client: redis.RedisCluster,
) -> None:
    """A retried batch (same ids) stores nothing twice; an event to topics of two partitions
    without an id gets one id (``x`` and 16 hex digits) stored in both, and its retry is
    recognised in both."""
    a, b = topics_of(3, 1, 1000)[0], topics_of(90, 1, 1000)[0]
    batch = [PublishRequest((a,), "one", id="r-1"), PublishRequest((a, b), "both")]
    batch = spanning_ids(batch, N)
    spanning = batch[1].id
    assert spanning is not None and spanning.startswith("x") and len(spanning) == 17
    first = publish(client, batch)
    again = publish(client, batch)
    assert first == again == ["r-1", spanning]
    assert [read(client, [t])[5] for t in (a, b)] == [2, 1]  # stream lengths: nothing twice
    (other,) = publish(client, [PublishRequest((b,), "one", id="r-1")])  # same id, other topic
    assert other == "r-1" and read(client, [b])[5] == 2


@ON_CLUSTER
@pytest.mark.processes("the Lua scripts run by real Redis servers and a Redis Cluster")
def test_a_new_dataset_starts_its_floor_and_advance_raises_it(client: redis.RedisCluster) -> None:
    keys = partition_keys("fresh:", TAGS[7])
    topic = topics_of(7, 1)[0]
    declared, args = partition_publish_args(keys, [PublishRequest((topic,), 1)], 10, 60.0)
    (position,) = client.eval(PARTITION_PUBLISH_SCRIPT, len(declared), *declared, *args)
    floor, epoch = int(client.get(keys.floor) or 0), client.get(keys.epoch)
    assert floor == int(position) - 1 or floor < int(position)
    raised = client.eval(
        PARTITION_ADVANCE_SCRIPT,
        3,
        *keys.sequence,
        int(position) + 50,
        epoch,  # type: ignore[arg-type]
    )
    assert int(raised) == int(position) + 51 == int(client.get(keys.floor) or 0)
    assert int(client.get(keys.position) or 0) == int(position) + 51
    stale = client.eval(PARTITION_ADVANCE_SCRIPT, 3, *keys.sequence, 1, b"another epoch")
    assert stale is None  # the dataset changed since it was read: read again
    (after,) = client.eval(PARTITION_PUBLISH_SCRIPT, len(declared), *declared, *args)
    assert int(after) > int(position) + 51  # no id handed out below the floor


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda keys, args: (keys, [*args[:4], "EVAL", *args[5:]]), "SPUBLISH or PUBLISH"),
        (
            lambda keys, args: ([*keys[:5], keys[5].replace(":t:", ":x:"), *keys[6:]], args),
            "a stream",
        ),
        (lambda keys, args: ([*keys[:3], keys[4], keys[3], *keys[5:]], args), "must be"),
        (lambda keys, args: (keys, [*args[:9], 0, *args[10:]]), "names its retry key"),
        (lambda keys, args: (keys, [*args[:6], "a\nb", *args[7:]]), "must not contain CR"),
        (lambda keys, args: (keys, [*args[:7], "data: x\n", *args[8:]]), "ending with one blank"),
        (lambda keys, args: (keys, [*args[:10], 0, *args[11:]]), "has no topic"),
    ],
)
@pytest.mark.processes("the Lua scripts run by real Redis servers and a Redis Cluster")
def test_malformed_arguments_are_refused_with_a_sentence(
    redis_server: RedisServer, change: Any, said: str
) -> None:
    """On a plain Redis (a shard), with PUBLISH: what an external publisher could get wrong."""
    keys = partition_keys("sse:", TAGS[0])
    topic = topics_of(0, 1)[0]
    declared, args = partition_publish_args(
        keys, [PublishRequest((topic,), "x", id="i")], 10, 60.0, "PUBLISH"
    )
    declared, args = change(declared, args)
    client = redis.Redis(port=redis_server.port)
    try:
        with pytest.raises(ResponseError, match=r"sse_fast: (event 1|the publish|KEYS)") as e:
            client.eval(PARTITION_PUBLISH_SCRIPT, len(declared), *declared, *args)
        assert said in str(e.value)
        assert client.get(keys.position) is None  # refused before anything was written
    finally:
        client.close()


def test_an_event_that_cannot_be_encoded_is_refused_before_sending() -> None:
    keys = partition_keys("sse:", TAGS[0])
    with pytest.raises(PublishError) as refused:
        partition_publish_args(keys, [PublishRequest(("t",), {"x": {1, 2}})], 10, 60.0)
    assert refused.value.status == 400


def test_a_batch_splits_by_partition_keeping_its_order() -> None:
    a, b = topics_of(1, 2), topics_of(2, 1)
    batch = [
        PublishRequest((a[0],), 1),
        PublishRequest((a[0], b[0]), 2, id="x-given"),
        PublishRequest((b[0], a[1]), 3),
    ]
    shares = split_by_partition(spanning_ids(batch, N), N)
    assert sorted(shares) == [1, 2]
    assert [(i, r.topics) for i, r in shares[1]] == [(0, (a[0],)), (1, (a[0],)), (2, (a[1],))]
    assert [(i, r.topics) for i, r in shares[2]] == [(1, (b[0],)), (2, (b[0],))]
    assert shares[1][1][1].id == shares[2][0][1].id == "x-given"
    assert shares[1][2][1].id == shares[2][1][1].id and shares[2][1][1].id.startswith("x")
    assert spanning_ids(batch[:1], N) == batch[:1]  # one topic: no id given


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.processes("the Lua scripts run by real Redis servers and a Redis Cluster")
def test_a_plain_redis_takes_the_partition_scripts_with_publish(redis_server: RedisServer) -> None:
    """Shards and N > 1 on one Redis: the same scripts, classic PUBLISH."""
    client = redis.Redis(port=redis_server.port)
    pubsub = client.pubsub()
    try:
        topic = topics_of(5, 1)[0]
        channel = partition_keys("sse:", TAGS[5]).channel(topic)
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
        (event_id,) = publish(client, [PublishRequest((topic,), "x")], command="PUBLISH")
        message = pubsub.get_message(timeout=2)
        assert message is not None and message["channel"] == channel.encode()
        assert message["data"].startswith(event_id.encode() + b" ")
    finally:
        pubsub.close()
        client.close()
