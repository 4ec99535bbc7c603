"""The Redis broker's parts, in process (no Redis): what they share, and that none
holds the broker (``brokers/redis/_member_options.py``, ``_broker.py``; ``Membership``:
``brokers/__init__.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from sse_fast.brokers import Membership
from sse_fast.brokers._sequencing import Sequenced
from sse_fast.brokers.redis import RedisBroker
from sse_fast.brokers.redis._channels import Channels
from sse_fast.brokers.redis._publishing import OneSequencePublisher, ShardedPublisher
from sse_fast.testing import wait_for


class _Hub:
    """A member that records what it is delivered."""

    def __init__(self) -> None:
        self.applied: list[Sequenced] = []

    def apply(self, items: Sequence[Sequenced]) -> None:
        self.applied.extend(items)


def test_a_membership_delivers_only_once_bound() -> None:
    membership = Membership()
    item = Sequenced(1, "1", ("news",), b"data: x\n\n", 0.0)
    with pytest.raises(RuntimeError, match="not bound to a hub"):
        membership.deliver([item])
    hub = _Hub()
    membership.bind(hub)  # type: ignore[arg-type]  # (the one method a delivery calls)
    membership.deliver([item])
    assert hub.applied == [item]
    with pytest.raises(RuntimeError, match="already bound"):
        membership.bind(_Hub())  # type: ignore[arg-type]
    assert not membership.closing
    membership.leave()
    assert membership.closing


def test_binding_the_broker_binds_what_its_parts_deliver_through() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0")
    hub = _Hub()
    broker.bind(hub)  # type: ignore[arg-type]
    item = Sequenced(1, "1", ("news",), b"data: x\n\n", 0.0)
    broker.feed.first.topics.membership.deliver([item])
    assert hub.applied == [item]


def test_what_the_broker_was_told_is_its_options() -> None:
    broker = RedisBroker(
        ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"], partitions=4, node="n1", workers=3
    )
    told = broker.options
    assert told.urls == ("redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0")
    assert (told.url, told.node, told.workers, told.partitions) == (told.urls[0], "n1", 3, 4)
    assert not told.cluster and len(told.member_id) == 12
    assert isinstance(broker.publisher, ShardedPublisher)
    assert [c.index for c in broker.feed.connections] == [0, 1]
    cluster = RedisBroker("redis-cluster://127.0.0.1:7000", partitions=4)
    assert cluster.options.cluster and cluster.feed.connections == []  # made from the map
    assert isinstance(RedisBroker("redis://127.0.0.1:1/0").publisher, OneSequencePublisher)


def _reached(root: Any, depth: int = 8) -> Iterator[tuple[str, Any]]:
    """Every object reached from ``root``'s attributes (lists, tuples and dicts walked),
    up to ``depth`` steps deep, with the path that reached it (each time it is reached;
    walked into once); objects of other packages (a client, a lock) are not walked into."""
    walked: set[int] = set()
    todo: list[tuple[str, Any, int]] = [("broker", root, 0)]
    while todo:
        path, value, level = todo.pop()
        yield path, value
        if level == depth or id(value) in walked:
            continue
        walked.add(id(value))
        if isinstance(value, list | tuple):
            todo += [(f"{path}[{i}]", v, level + 1) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            todo += [(f"{path}[{k!r}]", v, level + 1) for k, v in value.items()]
        elif type(value).__module__.startswith("sse_fast.") and hasattr(value, "__dict__"):
            todo += [(f"{path}.{k}", v, level + 1) for k, v in vars(value).items()]


@pytest.mark.parametrize(
    "urls",
    [
        ["redis://127.0.0.1:1/0"],
        ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"],
        ["redis-cluster://127.0.0.1:7000"],
    ],
    ids=["one", "shards", "cluster"],
)
def test_no_part_of_the_broker_holds_the_broker(urls: list[str]) -> None:
    """Each part is given what it uses (options, placement, membership, the feed's
    connections), not the broker: walked from the broker, only the root is it."""
    broker = RedisBroker(urls, partitions=4 if len(urls) > 1 or "cluster" in urls[0] else 1)
    walked = list(_reached(broker))
    assert len(walked) > 20  # the walk reached the connections' parts
    assert any(path.endswith(".new_topics") for path, _ in walked) or "cluster" in urls[0]
    assert [path for path, value in walked if value is broker] == ["broker"]


def test_the_walk_finds_a_part_that_holds_the_broker() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0")
    broker.feed.first.probes.back = broker  # type: ignore[attr-defined]  # (planted)
    held = [path for path, value in _reached(broker) if value is broker]
    assert held[0] == "broker" and held[1].endswith(".connections[0].probes.back")


def test_a_subscriber_giving_up_on_a_channel_leaves_its_confirmation_to_another() -> None:
    """Two subscribers of one channel wait for the same confirmation: the first gives up
    (its timeout, 0 here), the second still gets the confirmation, not a CancelledError its
    own task never asked for (a gather under a timeout cancelled the shared waiter: the
    subscription's own task, subscribing after a reconnect, ended for good)."""

    class _PubSub:  # sends nothing: the confirmations are the test's
        def __init__(self) -> None:
            self.sent: list[tuple[bytes, ...]] = []

        async def subscribe(self, *channels: bytes) -> None:
            self.sent.append(channels)

    async def main() -> None:
        channels = Channels(sharded=False, name="Redis")
        pubsub = _PubSub()
        await channels.subscribe(pubsub, [])  # nothing to wait for (a Cluster node's, idle)
        first = asyncio.create_task(channels.subscribe(pubsub, [b"c", b"d"], timeout=0))
        second = asyncio.create_task(channels.subscribe(pubsub, [b"c"], timeout=60))
        with pytest.raises(TimeoutError, match="2 of 2 subscriptions not confirmed"):
            await first
        assert not second.done()
        channels.confirmed(b"c")
        await second  # confirmed, not cancelled
        lost = asyncio.create_task(channels.subscribe(pubsub, [b"d"], timeout=60))
        await wait_for(lambda: len(pubsub.sent) == 3, what="the third subscriber waiting")
        channels.fail(ConnectionError("the Redis subscription was lost"))
        with pytest.raises(ConnectionError, match="subscription was lost"):
            await lost

    asyncio.run(main())
