"""``sse_fast/brokers/redis/_errors.py``: every error Redis (a shard, a Cluster) can answer
a publish with becomes a 503 with Retry-After and a sentence, never a 500, and says what
the broker must do; the errors come from a real Redis Cluster where they can be caused
cheaply (MOVED, CROSSSLOT, a non-local key in a script, redis-py's client-side refusal),
else from redis-py's own parser of the server's error lines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis._parsers.base import BaseParser
from redis.exceptions import RedisError

from sse_fast.brokers.redis._errors import RETRY_AFTER, classify
from sse_fast.brokers.redis._partitions import cluster_tags, key_slot

from ..support.redis_cluster import RedisCluster

ON_CLUSTER = pytest.mark.xdist_group("redis_cluster")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as started:
        yield started


def caught(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:  # the error under test
        return exc
    raise AssertionError("no error")


@ON_CLUSTER
@pytest.mark.processes("a real Redis Cluster's own errors")
def test_errors_of_a_real_cluster_are_503_with_what_to_do(cluster: RedisCluster) -> None:
    tags = cluster_tags(128)
    owner = cluster.master_of("{" + tags[0] + "}")
    other = next(port for port in cluster.primaries() if port != owner)
    plain = cluster.node(other)
    moved = caught(lambda: plain.get("{" + tags[0] + "}:position"))
    crossslot = caught(lambda: plain.eval("return 1", 2, "{a}x", "{b}y"))
    elsewhere = next(t for t in tags if cluster.master_of("{" + t + "}") == other)
    script = "return redis.call('GET', ARGV[1])"  # a key of another node, undeclared
    non_local = caught(lambda: cluster.node(owner).eval(script, 0, "{" + elsewhere + "}"))
    client = redis.RedisCluster(startup_nodes=cluster.startup_nodes())
    try:
        client_side = caught(lambda: client.eval("return 1", 2, "{a}x", "{b}y"))
    finally:
        client.close()
    found = {
        "moved": classify(moved, "node"),
        "crossslot": classify(crossslot, "node"),
        "client side": classify(client_side, "node"),
        "non local key": classify(non_local, "node"),
    }
    assert found["moved"] is not None and found["moved"].rehome
    assert found["crossslot"] is not None and found["crossslot"].ours
    assert found["client side"] is not None and found["client side"].ours
    assert found["non local key"] is not None and found["non local key"].ours
    for name, failure in found.items():
        assert failure is not None, name
        assert failure.error.status == 503 and failure.error.retry_after == RETRY_AFTER, name
    assert key_slot("{a}x") != key_slot("{b}y")


@pytest.mark.parametrize(
    ("line", "said", "flag"),
    [
        ("CLUSTERDOWN The cluster is down", "says CLUSTERDOWN", None),
        ("TRYAGAIN Multiple keys request during rehashing of slot", "being moved", None),
        ("MOVED 1716 127.0.0.1:21100", "no longer holds this partition", "rehome"),
        ("ASK 1716 127.0.0.1:21100", "no longer holds this partition", "rehome"),
        ("CROSSSLOT Keys in request don't hash to the same slot", "a bug of sse-fast", "ours"),
        ("READONLY You can't write against a read only replica.", "became a replica", "rehome"),
        ("LOADING Redis is loading the dataset in memory", "loading its data", None),
        ("MASTERDOWN Link with MASTER is down", "lost its link", None),
        ("NOSCRIPT No matching script", "lost the scripts", None),
        ("ERR something else", "refused the publish (ResponseError", None),
    ],
)
def test_every_error_line_of_redis_is_a_503(line: str, said: str, flag: str | None) -> None:
    failure = classify(BaseParser.parse_error(line), "Redis shard 2 of 3 (redis://b)")
    assert failure is not None
    assert failure.error.status == 503 and failure.error.retry_after == RETRY_AFTER
    assert said in str(failure.error)
    if "CLUSTERDOWN" not in line:  # which Redis (a Cluster's CLUSTERDOWN is the Cluster's)
        assert "Redis shard 2 of 3 (redis://b)" in str(failure.error)
    flags = {name for name in ("rehome", "ours", "unanswered") if getattr(failure, name)}
    assert flags == ({flag} if flag else set())


def test_an_event_the_script_refuses_is_the_publishers_400() -> None:
    failure = classify(BaseParser.parse_error("ERR sse_fast: event 1 has no topic"))
    assert failure is not None and failure.error.status == 400 and not failure.unanswered


@pytest.mark.parametrize(
    "exc",
    [redis.ConnectionError("Connection refused"), redis.TimeoutError("Timeout"), OSError(113)],
)
def test_no_answer_marks_the_redis_down_and_says_it_may_be_published(exc: Exception) -> None:
    failure = classify(exc)
    assert failure is not None and failure.unanswered and failure.error.status == 503
    assert "may or may not have been published" in str(failure.error)


def test_what_is_not_redis_is_not_ours_to_answer() -> None:
    assert classify(ValueError("a bug elsewhere")) is None
    assert isinstance(BaseParser.parse_error("ERR x"), RedisError)
