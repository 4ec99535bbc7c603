"""Partitions (``sse_fast/brokers/redis/_partitions.py``): the hashes against published
values, the tag table pinned, the layout record's refusals, and the keys against a real
Redis Cluster of 3 masters and 3 replicas (``tests/support/redis_cluster.py``): Redis's
own slots, one script per partition without CROSSSLOT, and a master killed."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from sse_fast.brokers.redis._partitions import (
    MAX_PARTITIONS,
    SLOTS,
    Layout,
    check_partitions,
    check_prefix,
    cluster_tags,
    crc16,
    fnv1a64,
    key_slot,
    layout_key,
    layout_refusal,
    new_layout,
    partition_keys,
    partition_of,
    shard_of,
    slot_range,
)

from ..support.redis_cluster import BASE_PORTS, RedisCluster

if shutil.which("redis-server") is None:  # .ci/run installs it
    raise RuntimeError("these tests need redis-server: apt-get install redis-server")

#: the tests on the real cluster share one (module-scoped) cluster: one xdist worker runs them
ON_CLUSTER = pytest.mark.xdist_group("redis_cluster")


# ---------------------------------------------------------------- hashes and slots


def test_fnv1a64_gives_the_published_test_vectors() -> None:
    # the FNV reference's FNV-1a 64 vectors (and the design's "a")
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8
    assert fnv1a64("é") == fnv1a64("é".encode())  # a string is hashed as UTF-8
    assert partition_of("foobar", 128) == 0x85944171F73967E8 % 128


def _crc16_bitwise(data: bytes) -> int:
    """Redis's CRC16 (crc16.c: CCITT, XMODEM), bit by bit: the oracle for ``crc16``."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def test_crc16_and_key_slot_are_redis_clusters() -> None:
    # the cluster specification's check value and the CLUSTER KEYSLOT page's examples
    assert crc16(b"123456789") == 0x31C3 == 12739
    assert key_slot("123456789") == 12739
    assert key_slot("foo") == 12182
    assert key_slot("somekey") == 11058
    assert key_slot("foo{hash_tag}") == key_slot("bar{hash_tag}") == 2515
    # the specification's hash tag rules: the first "{", the first "}" after it, not empty
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % SLOTS
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    rng = random.Random(42)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert crc16(data) == _crc16_bitwise(data)


def test_10000_topics_spread_over_128_partitions_and_3_shards() -> None:
    counts = Counter(partition_of(f"topic-{i}", 128) for i in range(10_000))
    assert sorted(counts) == list(range(128))
    # binomial, mean 78.1 and deviation 8.8: within 2.6 deviations (65 to 95 measured)
    assert min(counts.values()) >= 55 and max(counts.values()) <= 101, counts
    shards = Counter(shard_of(p, 3) for p in range(128))
    assert shards == {0: 43, 1: 43, 2: 42}
    assert Counter(partition_of(f"topic-{i}", 1) for i in range(100)) == {0: 100}


def test_the_tag_table_for_128_partitions_is_pinned() -> None:
    tags = cluster_tags(128)
    assert tags[:10] == ("0.178", "1.118", "2.59", "3.78", "4.66", "5.47", "6.20", "7.1", "8.13",
                         "9.32")  # fmt: skip
    assert hashlib.sha1(" ".join(tags).encode()).hexdigest() == (
        "21010e09e58f67ca8cfcb6b8c850f75dafe8199f"
    )
    assert max(len(tag) for tag in tags) == 7


@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 128, 1000, MAX_PARTITIONS])
def test_each_tag_lies_in_its_partitions_slot_range(partitions: int) -> None:
    tags = cluster_tags(partitions)
    assert len(tags) == len(set(tags)) == partitions
    ranges = [slot_range(p, partitions) for p in range(partitions)]
    assert sum(len(r) for r in ranges) == SLOTS and ranges[-1].stop == SLOTS
    for p, tag in enumerate(tags):
        assert tag == str(p) or tag.startswith(f"{p}.")
        assert key_slot("{" + tag + "}") in ranges[p], (p, tag)


# ---------------------------------------------------------------- limits and key names


@pytest.mark.parametrize("count", [0, -1, MAX_PARTITIONS + 1, True, 1.0, "128"])
def test_a_partition_count_outside_1_to_1024_is_refused(count: object) -> None:
    with pytest.raises(ValueError, match=r"--redis-partitions .*: give 1 to 1024 \(1 keeps one"):
        check_partitions(count)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--redis-partitions"):
        partition_of("orders", count)  # type: ignore[arg-type]


def test_limits_are_refused_with_what_to_do() -> None:
    for prefix in ("sse{:", "sse}:", "{a}:"):
        with pytest.raises(ValueError, match=r"choose one without '\{' or '\}' \(Redis Cluster"):
            check_prefix(prefix)
        with pytest.raises(ValueError, match="--redis-prefix"):
            partition_keys(prefix, "0.178")
        with pytest.raises(ValueError, match="--redis-prefix"):
            layout_key(prefix)
    for tag in ("", "a{b", "a}"):
        with pytest.raises(ValueError, match="give one of cluster_tags"):
            partition_keys("sse:", tag)
    with pytest.raises(ValueError, match="a partition >= 0 and shards >= 1"):
        shard_of(3, 0)
    with pytest.raises(ValueError, match="partition 128 is not one of 0 to 127"):
        slot_range(128, 128)
    assert check_partitions(MAX_PARTITIONS) == MAX_PARTITIONS and check_prefix("app:") == "app:"


def test_partition_keys_name_every_key_in_the_partitions_slot() -> None:
    keys = partition_keys("sse:", "3.78")
    assert keys.tagged == "sse:{3.78}:"
    assert keys.sequence == ["sse:{3.78}:position", "sse:{3.78}:epoch", "sse:{3.78}:floor"]
    assert keys.stream("orders") == "sse:{3.78}:t:orders"
    assert keys.channel("orders") == "sse:{3.78}:c:orders"
    assert keys.presence("orders") == "sse:{3.78}:p:orders"
    assert keys.probe("web-1/2") == "sse:{3.78}:n:web-1/2"
    # the id's length in bytes first (Lua's #id), as publish.lua's retry key
    assert keys.retry("é-1", ["a", "b"]) == "sse:{3.78}:r:4:é-1:a b"
    assert layout_key("sse:") == "sse:layout"
    names = [*keys.sequence, keys.stream("{x}y"), keys.channel("}{"), keys.retry("{i}", ["{"])]
    assert {key_slot(name) for name in names} == {key_slot("{3.78}")}
    assert key_slot("{3.78}") in slot_range(3, 128)


# ---------------------------------------------------------------- the layout record

_SHARDS = Layout("shards", 128, 3, 1)  # what a node given 3 URLs says of the second


def test_a_layout_record_round_trips_as_compact_json() -> None:
    record = new_layout("shards", 128, 3, by="web-3")
    text = record.encode()
    assert text.startswith('{"format":1,"kind":"shards","partitions":128,"shards":3,"shard":0,')
    assert json.loads(text)["by"] == "web-3" and len(json.loads(text)["layout"]) == 16
    assert Layout.decode(text) == record == Layout.decode(text.encode())
    assert new_layout("shards", 128, 3).layout != record.layout
    for bad in (dict(kind="ring", partitions=1), dict(kind="cluster", partitions=1, shards=2),
                dict(kind="shards", partitions=8, shards=2, shard=2)):  # fmt: skip
        with pytest.raises(ValueError, match=r"layout kind|shard"):
            Layout(**bad)  # type: ignore[arg-type]


def _record(**changes: object) -> str:
    fields = {"kind": "shards", "partitions": 128, "shards": 3, "shard": 1}
    fields |= {"layout": "7f3a91c2aa55aa55", "created": "2026-11-20T10:00:00+00:00", "by": "web-3"}
    return Layout(**(fields | changes)).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("recorded", "configured", "options", "sentence"),
    [
        (_record(), _SHARDS, {"layout_id": "7f3a91c2aa55aa55"}, None),
        (None, _SHARDS, {}, None),
        (None, Layout("single", 1), {"single_sequence": True}, None),
        (_record(kind="single", partitions=1, shards=1, shard=0), Layout("single", 1), {}, None),
        (_record(), Layout("shards", 64, 3, 1), {}, "Redis shard 2 of 3 (redis://b:6379/0, as "
         "given to this node) is part of layout 7f3a91c2aa55aa55 (3 shards, 128 partitions, "
         "created 2026-11-20T10:00:00+00:00 by node web-3), but this node is configured for 3 "
         "shards, 64 partitions: give every node the same --redis-url list in the same order "
         "and the same --redis-partitions (changing the layout: "
         "docs/operations/redis.md#changing-the-layout)"),
        (_record(), Layout("shards", 128, 4, 1), {}, "is part of layout 7f3a91c2aa55aa55 (3 "
         "shards, 128 partitions, created"),
        (_record(), Layout("cluster", 128), {}, "the Redis Cluster (redis://b:6379/0, as given "
         "to this node) is part of layout 7f3a91c2aa55aa55 (3 shards"),
        (_record(shard=2), _SHARDS, {}, "Redis shard 2 of 3 (redis://b:6379/0, as given to this "
         "node) is shard 3 of layout 7f3a91c2aa55aa55"),
        (_record(), _SHARDS, {"layout_id": "0123456789abcdef"}, "belongs to layout "
         "7f3a91c2aa55aa55 (3 shards, 128 partitions, created 2026-11-20T10:00:00+00:00 by node "
         "web-3), but the other shards belong to layout 0123456789abcdef"),
        (None, Layout("cluster", 128), {"single_sequence": True}, "the Redis Cluster "
         "(redis://b:6379/0, as given to this node) holds a one-sequence fleet's data "
         "(sse:position); partitioned layouts use other keys, so its history would be "
         "invisible: start the new layout on an empty Redis (or a new --redis-prefix) and see "
         "docs/operations/redis.md#upgrading"),
        (_record(kind="single", partitions=1, shards=1, shard=0), _SHARDS, {}, "holds a "
         "one-sequence fleet's data (layout 7f3a91c2aa55aa55 (one Redis, 1 partitions"),
        (_record(kind="single", shards=1, shard=0), Layout("single", 1), {}, "holds a "
         "partitioned fleet's data (layout 7f3a91c2aa55aa55 (one Redis, 128 partitions, "
         "created 2026-11-20T10:00:00+00:00 by node web-3)); one sequence uses other keys"),
        ("OK", _SHARDS, {}, "the layout record on Redis shard 2 of 3 (redis://b:6379/0, as given "
         "to this node) cannot be used: it is not a layout record (JSONDecodeError"),
        ('{"kind": "shards"}', _SHARDS, {}, "cannot be used: it is not a layout record "
         "(KeyError: 'format')"),
        ('{"format": 1, "kind": "ring", "partitions": 1}', _SHARDS, {}, "it is not a layout "
         "record (ValueError: layout kind 'ring'"),
        ('{"format": 2}', _SHARDS, {}, "cannot be used: its format is 2: a newer sse-fast wrote "
         "it; upgrade this node (it reads format 1)"),
    ],
)  # fmt: skip
def test_a_node_is_refused_unless_the_recorded_layout_is_its_own(
    recorded: str | None, configured: Layout, options: dict[str, object], sentence: str | None
) -> None:
    url = "redis://user:secret@b:6379/0"
    refusal = layout_refusal(recorded, configured, url, **options)  # type: ignore[arg-type]
    if sentence is None:
        assert refusal is None
    else:
        assert refusal is not None and sentence in refusal, refusal
        assert "secret" not in refusal  # no password in a sentence that is logged


# ---------------------------------------------------------------- on a real Redis Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        print(f"\n6-node Redis Cluster up in {started.started_in:.2f} s on ports {started.ports}")
        yield started


@ON_CLUSTER
@pytest.mark.processes("the partitions' keys placed by a real Redis Cluster")
def test_the_cluster_is_up_on_low_ports_with_an_even_share_of_partitions(
    cluster: RedisCluster,
) -> None:
    assert all(port in BASE_PORTS and port + 10000 < 32768 for port in cluster.ports)
    assert len(cluster.primaries()) == 3 and cluster.agreed() and cluster.replicated()
    assert all(len(cluster.replicas_of(master)) == 1 for master in cluster.primaries())
    assert cluster.url == "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports[:3])
    config = cluster.node(cluster.ports[0]).config_get("cluster-*")
    assert config["cluster-node-timeout"] == "500"
    assert config["cluster-require-full-coverage"] == "no"
    share = Counter(cluster.master_of("{" + tag + "}") for tag in cluster_tags(128))
    print(f"partitions per master: {dict(share)}")
    assert sorted(share.values()) == [42, 43, 43]


@ON_CLUSTER
@pytest.mark.processes("the partitions' keys placed by a real Redis Cluster")
def test_redis_puts_every_partition_key_in_its_partitions_slot(cluster: RedisCluster) -> None:
    names: list[tuple[int | None, str]] = []
    for p, tag in enumerate(cluster_tags(128)):
        keys = partition_keys("sse:", tag)
        names += [(p, name) for name in keys.sequence]
        names += [(p, keys.stream("orders")), (p, keys.stream("{x}")), (p, keys.channel("o"))]
        names += [
            (p, keys.retry("id-1", ["a", "b"])),
            (p, keys.presence("o")),
            (p, keys.probe("m")),
        ]
    rng = random.Random(7)  # and keys with braces anywhere: our hash tag rule is Redis's
    for _ in range(300):
        name = "".join(rng.choice("ab{}:é") for _ in range(rng.randrange(1, 12)))
        names.append((None, name))
    pipe = cluster.node(cluster.ports[0]).pipeline(transaction=False)
    for _, name in names:
        pipe.execute_command("CLUSTER KEYSLOT", name)  # type: ignore[no-untyped-call]
    slots = pipe.execute()
    for (partition, name), slot in zip(names, slots, strict=True):
        assert slot == key_slot(name), name
        assert partition is None or slot in slot_range(partition, 128), (partition, name, slot)


#: one partition's publish, in the shape of issue 42's script: every key declared and in one
#: slot (position, epoch, floor, a topic's stream, a retry key), SPUBLISH on the same slot
_PARTITION_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') + 1, now)
local pos = string.format('%d', position)
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('SET', KEYS[3], pos)
end
redis.call('XADD', KEYS[4], pos .. '-0', 'f', ARGV[2])
redis.call('SET', KEYS[5], '1', 'NX', 'EX', 60)
redis.call('SET', KEYS[1], pos)
redis.call('SPUBLISH', ARGV[3], pos)
return pos
"""


def _publish(client: redis.RedisCluster | redis.Redis, tag: str, frame: str = "x") -> int:
    keys = partition_keys("sse:", tag)
    declared = [*keys.sequence, keys.stream("orders"), keys.retry("e-1", ["orders"])]
    args = [os.urandom(8).hex(), frame, keys.channel("orders")]
    return int(client.eval(_PARTITION_SCRIPT, len(declared), *declared, *args))


@ON_CLUSTER
@pytest.mark.processes("the partitions' keys placed by a real Redis Cluster")
def test_one_script_declares_and_writes_a_partitions_keys_on_every_partition(
    cluster: RedisCluster,
) -> None:
    client = redis.RedisCluster(startup_nodes=cluster.startup_nodes(), socket_timeout=2)
    try:
        tags = cluster_tags(128)
        positions = {tag: _publish(client, tag) for tag in tags}  # CROSSSLOT would raise
        for tag, position in positions.items():
            keys = partition_keys("sse:", tag)
            assert int(client.get(keys.position)) == position  # type: ignore[arg-type]
            assert int(client.get(keys.floor)) == position  # type: ignore[arg-type]
            assert client.exists(keys.epoch) == 1 and client.xlen(keys.stream("orders")) == 1
    finally:
        client.close()


@ON_CLUSTER
@pytest.mark.processes("the partitions' keys placed by a real Redis Cluster")
def test_the_same_keys_without_the_tag_are_crossslot(cluster: RedisCluster) -> None:
    """The control: what the test above would meet if the keys lacked the partition's tag."""
    untagged = ["sse:position", "sse:epoch", "sse:floor", "sse:t:orders", "sse:r:3:e-1:orders"]
    assert len({key_slot(key) for key in untagged}) > 1
    args = ["epoch", "x", "sse:c:orders"]
    owner = cluster.node(cluster.master_of(untagged[0]))  # the first key's own master
    with pytest.raises(ClusterCrossSlotError, match="don't hash to the same slot"):
        owner.eval(_PARTITION_SCRIPT, len(untagged), *untagged, *args)
    client = redis.RedisCluster(startup_nodes=cluster.startup_nodes(), socket_timeout=2)
    try:
        with pytest.raises(RedisClusterException, match="all keys must map to the same key slot"):
            client.eval(_PARTITION_SCRIPT, len(untagged), *untagged, *args)
    finally:
        client.close()


@ON_CLUSTER
@pytest.mark.processes("the partitions' keys placed by a real Redis Cluster")
def test_a_killed_master_is_replaced_by_its_replica_through_the_harness(
    cluster: RedisCluster,
) -> None:
    tag = cluster_tags(128)[0]
    slot = key_slot("{" + tag + "}")
    master = cluster.master_of(slot)
    replicas = cluster.replicas_of(master)
    with cluster.node(master).pipeline(transaction=False) as pipe:  # WAIT on the same connection
        keys = partition_keys("sse:", tag)
        declared = [*keys.sequence, keys.stream("orders"), keys.retry("e-2", ["orders"])]
        pipe.eval(_PARTITION_SCRIPT, 5, *declared, "epoch", "before", keys.channel("orders"))
        pipe.execute_command("WAIT", 1, 5000)  # type: ignore[no-untyped-call]
        position, acknowledged = pipe.execute()
    assert acknowledged == 1
    killed_at = time.monotonic()
    dead = cluster.kill_master(slot)
    assert dead == master
    promoted_in = cluster.wait_failover(slot, dead)
    new_master = cluster.master_of(slot)
    print(f"\nkill -9 of master {dead}: replica {new_master} owns its slots, every node agreeing,"
          f" {promoted_in:.2f} s later (cluster-node-timeout 500 ms)")  # fmt: skip
    assert new_master in replicas
    assert int(cluster.node(new_master).get(keys.position)) == int(position)  # type: ignore[arg-type]
    client = redis.RedisCluster(startup_nodes=cluster.startup_nodes(), socket_timeout=2)
    try:
        assert _publish(client, tag, "after") > int(position)
        print(f"a publish to its partition works again {time.monotonic() - killed_at:.2f} s "
              "after the kill")  # fmt: skip
    finally:
        client.close()
    back_in = cluster.restart(dead)
    print(f"the killed node back as a replica of {new_master}, in sync, {back_in:.2f} s later")
    assert cluster.replicas_of(new_master) == [dead] and cluster.master_of(slot) == new_master


@ON_CLUSTER
@pytest.mark.processes("the partitions' keys placed by a real Redis Cluster")
def test_the_harness_leaves_no_process_and_no_file_behind_a_failed_test() -> None:
    with pytest.raises(RuntimeError, match="a test failing"), RedisCluster(replicas=0) as small:
        processes = list(small.processes.values())
        directory = small.directory
        assert len(processes) == 3 and os.listdir(directory)
        raise RuntimeError("a test failing")
    assert all(process.poll() is not None for process in processes)
    assert not os.path.exists(directory) and small.processes == {}
