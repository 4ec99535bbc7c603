"""``RedisBroker``: one member (a worker of a node) of the sequences kept in Redis.

The broker is put together from narrow parts, each owning what it uses, none
holding the broker (what they share comes to each at construction:
``_member_options.py``):

* its ``Feed`` (``_feed.py``): the connections, one per Redis it was given (a
  Cluster's: one per master, following the slot map, ``_rehoming.py``), each a
  client, a pub/sub subscription, the topics held there and what was read of the
  partitions that Redis holds (``_connection.py``); started, closed, and read
  together for availability, the topics held and the pattern streams' directory;
* its publisher (``_publishing.py``): with one URL and one partition, one script
  call on one sequence with today's keys (``OneSequencePublisher``, owning the
  script and the keys); otherwise batches over the partitions
  (``ShardedPublisher``);
* its ``PresenceStore`` (``_presence_store.py``) and ``NodeGather``
  (``_probes.py``), over the feed's connections;
* ``Placement`` (``_placement.py``): which Redis holds which partition, and what the
  keys are called; ``MemberOptions`` (``_member_options.py``), what it was told; and
  the broker's ``Membership`` (``brokers/__init__.py``), whom it delivers to once the
  hub binds it.

Each piece of the member's state has one owner, which alone changes it, through
named operations; the others read it or ask:

* each connection: the topics held on its Redis, what it read of each of its
  partitions (``PartitionRead``: the newest position seen, the horizon, the epoch,
  ``first_position``, the counts of repairs and breaks), which the broker's
  ``first_position_of``, ``horizon_of`` and ``stats`` read; and its
  ``Availability`` (``_availability.py``): up or down, told by its
  subscription, and by the publishes, probes and resyncs on that Redis;
* the feed: the connections list (a Cluster's rehoming adds a master's);
* the broker: binding the hub and leaving (``Membership``).

The broker is ``available`` while at least one Redis is up, and unavailable
(``unavailable_for``) while every one is down.

On a Redis Cluster (``redis-cluster://``) the connections are one per master,
made from the slot map at start, and the placement follows the map
(``_rehoming.py``); publishes use ``SPUBLISH`` and subscriptions ``SSUBSCRIBE``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

from ...publishing import PublishRequest
from .. import Broker, Expansion
from ._errors import RETRY_AFTER
from ._feed import Feed
from ._member_options import MemberOptions
from ._partitions import check_partitions
from ._placement import Placement
from ._presence_store import PresenceStore
from ._probes import NodeGather
from ._publishing import WAIT_MS, OneSequencePublisher, ShardedPublisher

__all__ = [
    "RETRY_AFTER",
    "WAIT_MS",
    "RedisBroker",
]


class RedisBroker(Broker):
    """A member (one worker of one node) of the sequences kept in one Redis or several."""

    stores_every_topic = False
    retry_after = RETRY_AFTER

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        partitions: int = 1,
        prefix: str = "sse:",
        history_frames: int = 1000,
        history_age: float = 86400.0,
        probe_interval: float = 5.0,
        load_frames: int = 1024,
        node: str | None = None,
        workers: int = 1,
        wait_replicas: int = 0,
    ) -> None:
        super().__init__()
        urls = (url,) if isinstance(url, str) else tuple(url)
        if not urls or len(set(urls)) != len(urls):
            raise ValueError(f"RedisBroker({url!r}): give one URL, or the shards' URLs once each")
        options = MemberOptions(
            urls=urls,
            partitions=partitions,
            prefix=prefix,
            history_frames=history_frames,
            history_age=history_age,
            probe_interval=probe_interval,
            load_frames=load_frames,
            node=node or uuid.uuid4().hex[:12],
            workers=workers,
            wait_replicas=wait_replicas,
            member_id=uuid.uuid4().hex[:12],
        )
        if options.cluster and len(urls) > 1:
            raise ValueError(
                f"RedisBroker({url!r}): a Redis Cluster is one URL (its seeds separated by "
                "commas), not one of several shards"
            )
        if check_partitions(partitions) < len(urls):
            raise ValueError(
                f"{partitions} partitions over {len(urls)} shards: give at least one partition "
                "per shard (--redis-partitions)"
            )
        #: what this member was told, and its id
        self.options = options
        self.partitions = partitions
        if options.cluster:  # one owner table, moved as the slot map does (``_rehoming.py``)
            self.placement = Placement(prefix, partitions, 1, owners=[0] * partitions)
        else:
            self.placement = Placement(prefix, partitions, len(urls))
        self.feed = Feed(options, self.placement, self.membership)
        connections = self.feed.connections
        self.publisher: OneSequencePublisher | ShardedPublisher
        if self.placement.single:
            self.publisher = OneSequencePublisher(options, self.feed.first)
        else:
            self.publisher = ShardedPublisher(
                options, self.placement, connections, self.feed.suspect
            )
        self.presence = PresenceStore(options, self.placement, connections)
        self.node_gather = NodeGather(options, self.placement, self.membership, connections)

    def partition_of(self, name: str) -> int:
        """The partition of topic ``name``: FNV-1a 64 of its UTF-8 bytes, modulo ``partitions``."""
        return self.placement.partition_of(name)

    def first_position_of(self, partition: int) -> int:
        """The oldest position of ``partition`` this member may claim to know."""
        return self.feed.state(partition).first_position

    def horizon_of(self, partition: int) -> int:
        """The newest position of ``partition`` a history read found handed out."""
        return self.feed.state(partition).horizon

    @property
    def first_position(self) -> int:  # type: ignore[override]  # read-only: the feed moves it
        """The oldest position this member may claim to know (raised by a break)."""
        if self.partitions == 1:
            return self.feed.state(0).first_position
        return min(self.first_position_of(p) for p in range(self.partitions))

    @property
    def horizon(self) -> int:  # type: ignore[override]  # read-only: the feed moves it
        """The newest position a history read found handed out (of any partition)."""
        if self.partitions == 1:
            return self.feed.state(0).horizon
        return max(self.horizon_of(p) for p in range(self.partitions))

    # ---------------------------------------------------------------- running

    async def start(self) -> None:
        """Connect, subscribe and start probing (``Feed.start``), then the publisher;
        ``ConnectionError`` when no subscription is live within 10 s (a Redis not live by
        then goes on trying, and is said in a warning)."""
        await self.feed.start()
        self.publisher.start()

    async def close(self) -> None:
        """Stop the subscriptions, the probes and the history loads, and close the clients."""
        await self.feed.close()

    # ---------------------------------------------------------------- availability

    @property
    def available(self) -> bool:
        """Whether a subscription is live and its Redis answered the last command."""
        return self.feed.available

    @property
    def partitions_down(self) -> int:
        """How many partitions are on a Redis (a shard, a Cluster master) that is down now."""
        return self.feed.partitions_down

    @property
    def unavailable_for(self) -> float:
        """Seconds since every Redis became unavailable (0 while one is available)."""
        return self.feed.unavailable_for

    # ---------------------------------------------------------------- topics, nodes

    def prepare(self, names: Sequence[str]) -> Awaitable[None] | None:
        """Subscribe to the topics of ``names`` this member does not hold yet and load their
        history (``Feed.prepare``); None when every one is held and loaded."""
        return self.feed.prepare(names)

    def complete_up_to(self) -> int:
        """In every partition, every topic born at or below this position that this member's
        pattern streams want was delivered (``Feed.complete_up_to``)."""
        return self.feed.complete_up_to()

    def expand(self, patterns: Sequence[str]) -> Awaitable[Expansion]:
        """The topics in Redis's directory whose names start with the literal prefixes of
        ``patterns`` (``Feed.expand``); ``PublishError`` 503 while Redis is away."""
        return self.feed.expand(patterns)

    def release(self, name: str) -> None:
        """Unsubscribe from topic ``name`` (``Feed.release``)."""
        self.feed.release(name)

    async def gather(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every worker of this node, through the node's channel; this worker
        alone when Redis is away."""
        return await self.node_gather.gather(query)

    async def store_presence(self, figures: dict[str, dict[str, Any]]) -> None:
        """Write this worker's presence figures of these topics to Redis; ``RuntimeError`` while
        a Redis holding some of them is away (the others' are written)."""
        await self.presence.store(figures)

    async def read_presence(self, topic: str) -> list[dict[str, Any]] | None:
        """Every live worker's presence figures of ``topic``, read from Redis; ``RuntimeError``
        while its Redis is away."""
        return await self.presence.read(topic)

    # ---------------------------------------------------------------- publishing

    async def publish(self, requests: list[PublishRequest], accepted_at: float) -> list[str]:
        """Sequence ``requests`` in Redis (one script call per partition) and return their ids;
        ``PublishError`` 400 for a refused batch, 503 while Redis is away, does not answer, or
        (with ``wait_replicas``) too few replicas confirmed it."""
        return await self.publisher.publish(requests)

    def stats(self) -> dict[str, Any]:
        """``/stats``' ``redis`` section: connected, node, topics subscribed, reconnects, repairs
        and history breaks; with partitions, the shards and partitions down too."""
        feed = self.feed
        connections = feed.connections
        states = [state for c in connections for state in c.states.values()]
        section: dict[str, Any] = {
            "connected": self.available,
            "node": self.options.node,
            "topics_subscribed": sum(len(c.topics.held) for c in connections),
            "reconnects": sum(c.reconnects for c in connections),
            "repairs": sum(state.repairs for state in states),
            "history_breaks": sum(state.history_breaks for state in states),
        }
        # topics born in Redis held for pattern streams
        section["pattern_births_adopted"] = sum(c.new_topics.adopted for c in connections)
        if feed.rehoming is not None:
            down = [c for c in feed.carrying if not c.availability.up]
            section["partitions"] = self.partitions
            section["cluster_masters"] = [c.url for c in feed.carrying]
            section["cluster_masters_down"] = [c.url for c in down]
            section["cluster_map_moves"] = feed.rehoming.moves
            section["partitions_down"] = sorted(p for c in down for p in c.partitions)
        elif not self.placement.single:
            down = [c for c in connections if not c.availability.up]
            section["partitions"] = self.partitions
            section["shards"] = len(connections)
            section["shards_down"] = [c.index for c in down]
            section["partitions_down"] = sorted(p for c in down for p in c.partitions)
        return {"redis": section}
