"""The layout check at start (``sse_fast/brokers/redis/_layout.py``) against real
``redis-server``s: the record written where none is, one layout id on every shard, a node
configured otherwise refused with one sentence (order, partition count, shard count, a
one-sequence fleet's data), a shard restarted empty taking the layout's record again, a
shard down skipped, two nodes starting together agreeing; and through ``sse-fast serve``
with ``--redis-url`` given once per shard, refused before any worker starts. The settings'
refusals of Redis URLs and partitions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis

from sse_fast.brokers.redis._layout import check_layout
from sse_fast.brokers.redis._partitions import Layout
from sse_fast.settings import Settings, SettingsError
from sse_fast.testing import RedisServer, free_port

from ..e2e.test_start import one_line, run_serve


@pytest.fixture
def shards() -> Iterator[list[RedisServer]]:
    servers = [RedisServer().start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


def record(server: RedisServer, prefix: str = "sse:") -> dict[str, object] | None:
    client = redis.Redis(port=server.port)
    try:
        raw = client.get(prefix + "layout")
    finally:
        client.close()
    return None if raw is None else dict(json.loads(raw))


def check(urls: list[str], partitions: int, **kwargs: object) -> str | None:
    return asyncio.run(check_layout(urls, partitions, node="node-a", **kwargs))  # type: ignore[arg-type]


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_one_redis_gets_a_single_record_once(shards: list[RedisServer]) -> None:
    url = shards[0].url
    assert check([url], 1) is None
    first = record(shards[0])
    assert first is not None
    assert {k: first[k] for k in ("format", "kind", "partitions", "shards", "shard", "by")} == {
        "format": 1,
        "kind": "single",
        "partitions": 1,
        "shards": 1,
        "shard": 0,
        "by": "node-a",
    }
    assert check([url], 1) is None and record(shards[0]) == first  # read, not written again


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_shards_share_one_layout_and_a_node_configured_otherwise_is_refused(
    shards: list[RedisServer],
) -> None:
    urls = [s.url for s in shards]
    assert check(urls, 128) is None
    records = [record(s) for s in shards]
    assert [r and r["shard"] for r in records] == [0, 1, 2]
    assert len({r and r["layout"] for r in records}) == 1
    assert all(
        r and (r["kind"], r["shards"], r["partitions"]) == ("shards", 3, 128) for r in records
    )
    layout = str(records[0] and records[0]["layout"])

    swapped = check([urls[1], urls[0], urls[2]], 128)
    assert swapped is not None and "Redis shard 1 of 3" in swapped
    assert f"is shard 2 of layout {layout} (3 shards, 128 partitions" in swapped
    assert "same --redis-url list in the same order" in swapped

    other_count = check(urls, 64)
    assert other_count is not None and "configured for 3 shards, 64 partitions" in other_count

    fewer = check(urls[:2], 128)
    assert fewer is not None and "configured for 2 shards, 128 partitions" in fewer

    one = check(urls[:1], 1)
    assert one is not None and "holds a partitioned fleet's data" in one


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_a_one_sequence_fleets_redis_is_refused_as_a_shard(shards: list[RedisServer]) -> None:
    client = redis.Redis(port=shards[1].port)
    try:
        client.set("sse:position", "1764160000000000")  # what a fleet of an earlier version left
    finally:
        client.close()
    refusal = check([s.url for s in shards], 128)
    assert refusal is not None and "Redis shard 2 of 3" in refusal
    assert "holds a one-sequence fleet's data (sse:position)" in refusal
    assert "docs/operations/redis.md#upgrading" in refusal
    assert [record(s) for s in shards] == [None, None, None]  # refused before writing any
    assert check([shards[1].url], 1) is None  # that fleet itself goes on as before


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_a_shard_restarted_empty_takes_the_layouts_record_again(
    shards: list[RedisServer],
) -> None:
    urls = [s.url for s in shards]
    assert check(urls, 128) is None
    before = record(shards[2])
    shards[2].restart()  # no persistence: it comes back empty
    assert record(shards[2]) is None
    assert check(urls, 128) is None
    assert record(shards[2]) == before


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_a_shard_down_at_start_is_skipped_and_recorded_once_back(
    shards: list[RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """One shard down (refused), one hung (SIGSTOP: the timeout): the start goes on, warned."""
    urls = [s.url for s in shards]
    shards[1].kill()
    shards[2].stop()
    started = time.monotonic()
    assert check(urls, 128, timeout=1.0) is None
    assert time.monotonic() - started < 5
    assert caplog.text.count("did not answer the layout check") == 2
    shards[2].cont()
    assert record(shards[0]) is not None and record(shards[2]) is None
    shards[1].start()
    assert check(urls, 128) is None
    assert record(shards[1]) == {**(record(shards[0]) or {}), "shard": 1}
    assert record(shards[2]) == {**(record(shards[0]) or {}), "shard": 2}


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_two_nodes_starting_together_agree_on_one_layout(shards: list[RedisServer]) -> None:
    urls = [s.url for s in shards]

    async def both() -> list[str | None]:
        return list(
            await asyncio.gather(
                check_layout(urls, 128, node="node-a"), check_layout(urls, 128, node="node-b")
            )
        )

    assert asyncio.run(both()) == [None, None]
    assert len({r and r["layout"] for r in (record(s) for s in shards)}) == 1


@pytest.mark.processes("the layout recorded in a real Redis and a refused start")
def test_serve_refuses_another_layout_before_any_worker(shards: list[RedisServer]) -> None:
    urls = [s.url for s in shards[:2]]
    assert check(urls, 128) is None
    flags = [flag for url in urls for flag in ("--redis-url", url)]
    code, output, _ = run_serve(*flags, "--redis-partitions", "64", "--workers", "2")
    assert code == 2, output
    line = one_line(output)
    assert "configured for 2 shards, 64 partitions" in line, line
    assert "Starting granian" not in output


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"redis_url": "redis://a:1 redis://a:1"}, "is given twice"),
        ({"redis_url": "redis-cluster://a:1 redis://b:1"}, "a Redis Cluster is given alone"),
        ({"redis_url": "redis-cluster://a:1/2"}, "only database 0"),
        ({"redis_url": "redis-cluster://a"}, "seed 'a' is not host:port"),
        ({"redis_url": "redis://a:1 redis://b:1", "redis_partitions": 1}, "give at least 2"),
        ({"redis_url": "redis://a:1", "redis_partitions": 1025}, "1 to 1024, got 1025"),
        ({"redis_url": "redis://a:1", "redis_partitions": -1}, "got -1"),
        ({"redis_url": "redis://a:1 http://b:1"}, "must start with redis://"),
        ({"redis_url": "redis://a:1 redis://b:1", "redis_prefix": "a{b}:"}, "without '{'"),
    ],
)
def test_settings_refuse_unusable_redis_layouts(settings: dict[str, object], said: str) -> None:
    with pytest.raises(SettingsError, match="redis_") as refused:
        Settings(**settings)  # type: ignore[arg-type]
    assert said in str(refused.value)


def test_shards_default_to_128_partitions_and_one_redis_to_one() -> None:
    assert Settings(redis_url="redis://a:1").redis_partition_count == 1
    assert Settings(redis_url="redis://a:1").redis_urls == ("redis://a:1",)
    two = Settings(redis_url=" redis://a:1\tredis://b:1 ")
    assert two.redis_urls == ("redis://a:1", "redis://b:1") and two.redis_partition_count == 128
    assert Settings(redis_url="redis://a:1", redis_partitions=16).redis_partition_count == 16
    env = Settings.from_env({"SSE_FAST_REDIS_URL": "redis://a:1 redis://b:1"})
    assert env.redis_urls == ("redis://a:1", "redis://b:1")
    assert Settings(redis_url="redis-cluster://a:1,b:2").redis_partition_count == 128
    assert Settings(redis_url="rediss-cluster://a:1", redis_partitions=8).redis_partition_count == 8


def test_the_redis_url_flag_is_given_once_per_shard() -> None:
    from sse_fast._flags import build_parser

    args = build_parser().parse_args(
        ["serve", "--redis-url", "redis://a:1", "--redis-url", "redis://b:1"]
    )
    assert args.redis_url == ["redis://a:1", "redis://b:1"]
    assert Layout("shards", 128, 3, 2).shape() == "3 shards, 128 partitions"
    assert free_port() > 0
